/**
 * The `[ops]` section: where the ops HTTP listener (Prometheus /metrics, /healthz, /readyz) binds and how
 * many distinct card readers get a label of their own. Defaults live only here.
 */
import { z } from 'zod';

export const opsConfigSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    /** Loopback by default: metrics name readers and listeners; expose them deliberately. */
    host: z.string().min(1).default('127.0.0.1'),
    /** 9180 rather than 9100, which node_exporter takes on most monitored hosts. */
    port: z.number().int().min(0).max(65535).default(9180),
    /** Readers past this many get the label `other` on per-reader metrics (bounds label cardinality). */
    maxReaderLabels: z.number().int().min(1).max(1000).default(32),
    /** A scrape that takes longer than this is answered 503 instead of hanging the scraper, ms. */
    scrapeTimeoutMs: z.number().int().min(100).default(5000),
  })
  .prefault({});

export type OpsConfig = z.output<typeof opsConfigSchema>;
