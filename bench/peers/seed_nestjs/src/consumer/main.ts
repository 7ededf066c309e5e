// The seed's consumer (06-redis-queue/consumer): takes `reserveEvent` jobs off the queue and
// writes the reservation, exactly as the seed's ReservationConsumer and ReservationService do:
// count, then insert, with no lock and no unique key, every error logged and swallowed. Three of
// these run, as in the seed's Docker Compose file.
import 'reflect-metadata';
import { BullModule, OnWorkerEvent, Processor, WorkerHost } from '@nestjs/bullmq';
import { BadRequestException, Injectable, Logger, Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { NestFactory } from '@nestjs/core';
import { Job } from 'bullmq';
import { OutcomeCounts } from '../lib/bench';
import { Database, Queryable } from '../lib/database';
import { DatabaseModule } from '../lib/database.module';
import { RESERVATION_QUEUE, RedisQueueModule } from '../lib/redis-queue.module';

const RESERVATION_COLUMNS =
  '"public"."Reservation"."id", "public"."Reservation"."eventId", "public"."Reservation"."userId", ' +
  '"public"."Reservation"."reservedAt", "public"."Reservation"."status"::text';
const EVENT_COLUMNS =
  '"public"."Event"."id", "public"."Event"."name", "public"."Event"."date", ' +
  '"public"."Event"."location", "public"."Event"."maxTickets", "public"."Event"."createdAt", ' +
  '"public"."Event"."updatedAt", "public"."Event"."deletedAt"';

@Injectable()
export class ReservationService {
  constructor(private readonly db: Database) {}

  /** The seed's reserveTicket: three reads and an insert in one read-committed transaction. */
  async reserveTicket(eventId: number, userId: number) {
    await this.db.transaction(async (prisma) => {
      const existingReservation = (
        await prisma.query(
          `SELECT ${RESERVATION_COLUMNS} FROM "public"."Reservation" WHERE ` +
            `("public"."Reservation"."userId" = $1 AND "public"."Reservation"."eventId" = $2) LIMIT $3 OFFSET $4`,
          [userId, eventId, 1, 0],
        )
      )[0];
      if (existingReservation) throw new BadRequestException('already reserved');

      const isAvailableForReserve = await this.isAvailableForReserve(eventId, prisma);
      if (!isAvailableForReserve) throw new BadRequestException('sold out');

      await prisma.query(
        'INSERT INTO "public"."Reservation" ("eventId","userId","reservedAt","status") ' +
          `VALUES ($1,$2,$3,CAST($4::text AS "public"."ReservationStatusType")) RETURNING ${RESERVATION_COLUMNS}`,
        [eventId, userId, new Date(), 'RESERVED'],
      );
    });
  }

  async isAvailableForReserve(eventId: number, prisma: Queryable): Promise<boolean> {
    const { maxTickets } = (
      await prisma.query(
        `SELECT ${EVENT_COLUMNS} FROM "public"."Event" WHERE "public"."Event"."id" = $1 LIMIT $2 OFFSET $3`,
        [eventId, 1, 0],
      )
    )[0];
    const currentReservations = Number(
      (
        await prisma.query(
          'SELECT COUNT(*) AS "_count._all" FROM (SELECT "public"."Reservation"."id" FROM ' +
            '"public"."Reservation" WHERE "public"."Reservation"."eventId" = $1 OFFSET $2) AS "sub"',
          [eventId, 0],
        )
      )[0]['_count._all'],
    );
    return maxTickets > currentReservations;
  }
}

@Processor(RESERVATION_QUEUE)
export class ReservationConsumer extends WorkerHost {
  private readonly logger = new Logger(ReservationConsumer.name);

  constructor(
    private readonly reservationService: ReservationService,
    private readonly outcomeCounts: OutcomeCounts,
  ) {
    super();
  }

  async process(job: Job<any>) {
    const { userId, eventId } = job.data;
    try {
      this.logger.log(`${job.id} received. userId : ${userId}, eventId : ${eventId}`);
      await this.reservationService.reserveTicket(eventId, userId);
      this.outcomeCounts.reserved(eventId); // measurement addition (lib/bench.ts)
    } catch (error) {
      this.logger.error(`Error processing reservation: ${error.message}`);
    }
  }

  // Measurement additions (lib/bench.ts): count the jobs BullMQ reports final, per event.
  @OnWorkerEvent('completed')
  onCompleted(job: Job<any>) {
    this.outcomeCounts.final(job.data.eventId);
  }

  @OnWorkerEvent('failed')
  onFailed(job: Job<any> | undefined) {
    if (job) this.outcomeCounts.final(job.data.eventId);
  }
}

@Module({
  imports: [
    ConfigModule.forRoot({ isGlobal: true, ignoreEnvFile: true }),
    // The seed's consumer logs every query (its PrismaService); SEED_QUERY_LOG=off drops that.
    DatabaseModule.forRoot(process.env.SEED_QUERY_LOG !== 'off'),
    RedisQueueModule,
    BullModule.registerQueue({ name: RESERVATION_QUEUE }),
  ],
  providers: [ReservationService, ReservationConsumer, OutcomeCounts],
})
export class AppModule {}

async function bootstrap() {
  const app = await NestFactory.create(AppModule, { bufferLogs: true });
  const configService = app.get<ConfigService>(ConfigService);
  await app.listen(configService.getOrThrow<number>('SERVICE_PORT'), '127.0.0.1');
}
bootstrap();
