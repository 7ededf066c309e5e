// Node BullMQ on Redis Cluster (ioredis's Cluster client, prefix '{bull}' as BullMQ advises):
// adds jobs with Queue.addBulk, then works until <jobs-to-finish> jobs completed (none: it only
// adds), printing one JSON line per job it saw and a last line {done: n}.
// usage: node cluster.cjs <host:port,host:port...> <queue> '<json: [{name, data}, ...]>' <jobs-to-finish>
'use strict';
const { Queue, Worker } = require('bullmq');
const { Cluster } = require('ioredis');

const [seeds, queueName, jobsJson, total] = process.argv.slice(2);
const nodes = seeds.split(',').map((s) => {
  const [host, port] = s.split(':');
  return { host, port: Number(port) };
});
// Workers block on the marker: no retry limit per request (BullMQ requires it).
const connect = () => new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: null } });
const prefix = '{bull}';
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

(async () => {
  const queue = new Queue(queueName, { connection: connect(), prefix });
  const jobs = JSON.parse(jobsJson);
  if (jobs.length) {
    const added = await queue.addBulk(jobs);
    out({ added: added.map((j) => j.id) });
  }
  if (Number(total) === 0) {
    await queue.close();
    process.exit(0);
  }
  let finished = 0;
  const worker = new Worker(
    queueName,
    async (job) => {
      out({ seen: job.id, name: job.name, data: job.data });
      return { ok: true };
    },
    { connection: connect(), prefix, concurrency: 5 },
  );
  worker.on('completed', async () => {
    finished += 1;
    if (finished >= Number(total)) {
      await worker.close();
      out({ counts: await queue.getJobCounts('completed', 'wait', 'active') });
      await queue.close();
      out({ done: finished });
      process.exit(0);
    }
  });
  worker.on('error', (err) => out({ error: String(err) }));
})().catch((err) => { console.error(err); process.exit(1); });
