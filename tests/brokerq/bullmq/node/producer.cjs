// Adds jobs with Node BullMQ's Queue.add (one job) or Queue.addBulk (several); prints the ids.
// usage: node producer.cjs <redis-url> <queue> '<json: [{name, data, opts}, ...]>'
'use strict';
const { Queue } = require('bullmq');

const [url, queueName, jobsJson] = process.argv.slice(2);
const jobs = JSON.parse(jobsJson);

(async () => {
  const queue = new Queue(queueName, { connection: { url } });
  let added;
  if (jobs.length === 1) {
    added = [await queue.add(jobs[0].name, jobs[0].data, jobs[0].opts)];
  } else {
    added = await queue.addBulk(jobs);
  }
  process.stdout.write(JSON.stringify({ ids: added.map((j) => j.id) }) + '\n');
  await queue.close();
})().catch((err) => { console.error(err); process.exit(1); });
