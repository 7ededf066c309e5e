// Measurement additions, not the seed: how the benchmark learns when a request is final. The seed
// removes every job from Redis when it completes or fails and keeps no record of a rejected
// request, so nothing it stores says how many of an event's requests are done. The producer
// counts the jobs it added per event (in memory: there is one producer); the consumers count, per
// event, the jobs BullMQ reports completed or failed and the reservations they committed, in two
// Redis hashes, flushed in batches so that counting costs the consumers almost nothing per job.
// (Counting the reservations there rather than with COUNT(*) keeps the benchmark's polling off the
// Reservation table, which has no index on "eventId" in the seed.)
import { Global, Injectable, Module, OnModuleDestroy } from '@nestjs/common';
import { ConfigService } from '@nestjs/config';
import Redis from 'ioredis';

export const FINAL_COUNTS_KEY = 'bench:seed:final';
export const RESERVED_COUNTS_KEY = 'bench:seed:reserved';
const FLUSH_INTERVAL_MS = 10;

export function benchRedis(config: ConfigService): Redis {
  return new Redis({
    host: config.getOrThrow<string>('REDIS_QUEUE_HOST'),
    port: Number(config.getOrThrow<string>('REDIS_QUEUE_PORT')),
    password: config.get<string>('REDIS_QUEUE_PASSWORD', '') || undefined,
  });
}

@Injectable()
export class AcceptedCounts {
  private readonly counts = new Map<number, number>();

  add(eventId: number) {
    this.counts.set(eventId, (this.counts.get(eventId) ?? 0) + 1);
  }

  get(eventId: number): number {
    return this.counts.get(eventId) ?? 0;
  }
}

@Injectable()
export class OutcomeCounts implements OnModuleDestroy {
  private readonly redis: Redis;
  private pending = { final: new Map<number, number>(), reserved: new Map<number, number>() };
  private readonly timer: NodeJS.Timeout;

  constructor(config: ConfigService) {
    this.redis = benchRedis(config);
    this.timer = setInterval(() => void this.flush(), FLUSH_INTERVAL_MS);
  }

  final(eventId: number) {
    this.pending.final.set(eventId, (this.pending.final.get(eventId) ?? 0) + 1);
  }

  reserved(eventId: number) {
    this.pending.reserved.set(eventId, (this.pending.reserved.get(eventId) ?? 0) + 1);
  }

  private async flush() {
    const { final, reserved } = this.pending;
    if (final.size === 0 && reserved.size === 0) return;
    this.pending = { final: new Map(), reserved: new Map() };
    const pipeline = this.redis.pipeline();
    // Reservations first: a request is never seen final before its reservation is counted.
    for (const [eventId, n] of reserved) pipeline.hincrby(RESERVED_COUNTS_KEY, String(eventId), n);
    for (const [eventId, n] of final) pipeline.hincrby(FINAL_COUNTS_KEY, String(eventId), n);
    await pipeline.exec();
  }

  async onModuleDestroy() {
    clearInterval(this.timer);
    await this.flush();
    await this.redis.quit();
  }
}

@Global()
@Module({ providers: [AcceptedCounts], exports: [AcceptedCounts] })
export class AcceptedCountsModule {}
