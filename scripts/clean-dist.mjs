#!/usr/bin/env node
// Removes dist/ before a build, so a file deleted from src/ cannot linger in the compiled output or the package.
import { rmSync } from 'node:fs';

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
