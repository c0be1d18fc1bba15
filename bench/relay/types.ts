/** The IPC messages between the benchmark driver (main.ts) and its peer processes (worker.ts). */
export type Transport = 'tcp' | 'tls' | 'ws' | 'wss';

export type WorkerCommand =
  | { cmd: 'listen'; transport: Transport; port: number; count?: boolean }
  | { cmd: 'connect'; name: string; transport: Transport; port: number }
  | { cmd: 'tunnel'; name: string; transport: Transport; port: number; token: string }
  | { cmd: 'rtt'; name: string; count: number; warmup: number; size: number }
  | { cmd: 'bulk'; name: string; bytes: number; chunk: number }
  | { cmd: 'expect'; bytes: number }
  | {
      cmd: 'many';
      transport: Transport;
      port: number;
      prefix: string;
      count: number;
      inflight: number;
      keep: boolean;
    }
  | { cmd: 'open'; group: string; transport: Transport; port: number; count: number; tunnel: boolean; inflight: number }
  | { cmd: 'blast'; group: string; ms: number; chunk: number }
  | { cmd: 'countStart'; group: string }
  | { cmd: 'countStop'; group: string }
  | { cmd: 'rttFor'; name: string; ms: number; size: number; gapMs?: number }
  | { cmd: 'drop' }
  | { cmd: 'exit' };

export type WorkerRequest = WorkerCommand & { id: number };

export type WorkerReply =
  { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };
