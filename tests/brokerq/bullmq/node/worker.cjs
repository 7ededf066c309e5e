// A Node BullMQ worker like the seed's consumer: processes `reserveEvent` jobs and prints one
// JSON line per job it saw (id, name, data, attemptsMade, opts) and per final outcome.
// usage: node worker.cjs <redis-url> <queue> <jobs-to-finish> [fail-attempts]
// A job whose data has `fail: true` throws on its first [fail-attempts] attempts (default: all).
'use strict';
const { Worker } = require('bullmq');

const [url, queue, total, failAttempts] = process.argv.slice(2);
const expected = Number(total);
const failUpTo = failAttempts === undefined ? Infinity : Number(failAttempts);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
let finished = 0;

const worker = new Worker(
  queue,
  async (job) => {
    out({ seen: job.id, name: job.name, data: job.data, attemptsMade: job.attemptsMade, opts: job.opts });
    if (job.data && job.data.fail && job.attemptsMade < failUpTo) {
      throw new Error(`node failure on attempt ${job.attemptsMade + 1}`);
    }
    return { reserved: job.data.eventId };
  },
  { connection: { url }, concurrency: 5, stalledInterval: 1000, lockDuration: 5000 },
);

const done = async () => {
  finished += 1;
  if (finished >= expected) {
    await worker.close();
    out({ done: finished });
    process.exit(0);
  }
};
worker.on('completed', (job) => { out({ completed: job.id }); done(); });
worker.on('failed', (job, err) => {
  const final = job.attemptsMade >= (job.opts.attempts || 1);
  out({ failed: job.id, reason: err.message, attemptsMade: job.attemptsMade, final });
  if (final) done();
});
worker.on('error', (err) => out({ error: String(err) }));
worker.waitUntilReady().then(() => out({ ready: true }));
