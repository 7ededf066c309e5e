// Measurement additions, not the seed: the read endpoints the benchmark's load driver needs
// (health, an event's outcome counts, its reservations, the queue's job counts). They compute
// from what the seed stores (the Reservation table, BullMQ's job states) and from the counts of
// lib/bench.ts; none of them is on the path of a reservation.
import { InjectQueue } from '@nestjs/bullmq';
import {
  Controller,
  DefaultValuePipe,
  Get,
  Injectable,
  Module,
  OnModuleDestroy,
  Param,
  ParseIntPipe,
  Query,
} from '@nestjs/common';
import { ConfigService } from '@nestjs/config';
import { Queue } from 'bullmq';
import Redis from 'ioredis';
import { AcceptedCounts, FINAL_COUNTS_KEY, RESERVED_COUNTS_KEY, benchRedis } from '../lib/bench';
import { Database } from '../lib/database';
import { RESERVATION_QUEUE } from '../lib/redis-queue.module';
import { ReservationModule } from './reservation.module';

@Injectable()
export class BenchRedis implements OnModuleDestroy {
  readonly client: Redis;

  constructor(config: ConfigService) {
    this.client = benchRedis(config);
  }

  async onModuleDestroy() {
    await this.client.quit();
  }
}

@Controller()
export class BenchController {
  constructor(
    private readonly db: Database,
    private readonly acceptedCounts: AcceptedCounts,
    private readonly redis: BenchRedis,
    @InjectQueue(RESERVATION_QUEUE) private readonly queue: Queue,
  ) {}

  @Get('health')
  health() {
    return { status: 'ok' };
  }

  /** The seed has no outcome: a request is final once its job completed or failed; reserved
   * ones committed a row; the rest (final - reserved) were turned down for a reason it swallowed
   * (the seed cannot say which). */
  @Get('event/:eventId/outcomes')
  async outcomes(@Param('eventId', ParseIntPipe) eventId: number) {
    const field = String(eventId);
    const [finalCount, reservedCount] = await Promise.all([
      this.redis.client.hget(FINAL_COUNTS_KEY, field),
      this.redis.client.hget(RESERVED_COUNTS_KEY, field),
    ]);
    const accepted = this.acceptedCounts.get(eventId);
    const final = Number(finalCount ?? 0);
    // A reservation is counted before its job is reported final, so for a moment a request can
    // be counted reserved and not yet final.
    const reserved = Math.min(Number(reservedCount ?? 0), final);
    const rejected = final - reserved;
    return {
      eventId,
      accepted,
      final,
      pending: Math.max(0, accepted - final),
      reserved,
      rejected,
      byReason: rejected ? { UNKNOWN: rejected } : {},
    };
  }

  @Get('event/:eventId/reservations')
  async reservations(
    @Param('eventId', ParseIntPipe) eventId: number,
    @Query('offset', new DefaultValuePipe(0), ParseIntPipe) offset: number,
    @Query('limit', new DefaultValuePipe(100), ParseIntPipe) limit: number,
  ) {
    const [items, total] = await Promise.all([
      this.db.query(
        'SELECT "id", "eventId", "userId", "status"::text AS "status", "reservedAt" ' +
          'FROM "public"."Reservation" WHERE "eventId" = $1 ORDER BY "id" LIMIT $2 OFFSET $3',
        [eventId, Math.min(limit, 1000), offset],
      ),
      this.db.query<{ n: number }>(
        'SELECT COUNT(*)::int AS n FROM "public"."Reservation" WHERE "eventId" = $1',
        [eventId],
      ),
    ]);
    return { items, total: total[0].n, limit, offset };
  }

  @Get('bench/queue')
  async queueState() {
    const [counts, workers] = await Promise.all([
      this.queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'),
      this.queue.getWorkersCount(),
    ]);
    return { ...counts, workers };
  }
}

@Module({
  imports: [ReservationModule],
  providers: [BenchRedis],
  controllers: [BenchController],
})
export class BenchModule {}
