// The seed's producer/src/reservation (controller, service, repository, DTOs), one file here.
import { BullModule, InjectQueue } from '@nestjs/bullmq';
import {
  BadRequestException,
  Body,
  Controller,
  Get,
  Injectable,
  Module,
  NotFoundException,
  Param,
  ParseIntPipe,
  Post,
  Query,
} from '@nestjs/common';
import { Queue } from 'bullmq';
import { Exclude, Expose, plainToInstance } from 'class-transformer';
import { IsNumber } from 'class-validator';
import { AcceptedCounts } from '../lib/bench';
import { Database } from '../lib/database';
import { RESERVATION_QUEUE, RedisQueueModule } from '../lib/redis-queue.module';

export class GetReservationRequest {
  @IsNumber()
  eventId: number;

  @IsNumber()
  userId: number;
}

export class PostReservationRequest {
  @IsNumber()
  eventId: number;

  @IsNumber()
  userId: number;
}

@Exclude()
export class GetReservationResponse {
  @Expose()
  id: number;

  @Expose()
  ticketId: number;

  @Expose()
  userId: number;

  @Expose()
  status: string;

  @Expose()
  reservedAt: number;
}

export const RESERVATION_COLUMNS =
  '"public"."Reservation"."id", "public"."Reservation"."eventId", "public"."Reservation"."userId", ' +
  '"public"."Reservation"."reservedAt", "public"."Reservation"."status"::text';

@Injectable()
export class ReservationRepository {
  constructor(private readonly db: Database) {}

  async getReservationInfo(eventId: number, userId: number) {
    const rows = await this.db.query(
      `SELECT ${RESERVATION_COLUMNS} FROM "public"."Reservation" WHERE ` +
        `("public"."Reservation"."eventId" = $1 AND "public"."Reservation"."userId" = $2) LIMIT $3 OFFSET $4`,
      [eventId, userId, 1, 0],
    );
    return rows[0] ?? null;
  }
}

@Injectable()
export class ReservationService {
  constructor(
    @InjectQueue(RESERVATION_QUEUE) private readonly reservationQueue: Queue,
    private readonly reservationRepository: ReservationRepository,
  ) {}

  async getReservationInfo(eventId: number, userId: number) {
    const reservation = await this.reservationRepository.getReservationInfo(eventId, userId);
    if (!reservation) throw new NotFoundException('no such reservation');
    return reservation;
  }

  /** Queues the request and answers with the job: nothing is checked, nothing decided here. */
  async reserveEvent(eventId: number, userId: number) {
    try {
      return await this.reservationQueue.add(
        'reserveEvent',
        { userId, eventId },
        { removeOnComplete: true, removeOnFail: true },
      );
    } catch (error) {
      throw new BadRequestException();
    }
  }
}

@Controller('reservation')
export class ReservationController {
  constructor(
    private readonly reservationService: ReservationService,
    private readonly acceptedCounts: AcceptedCounts,
  ) {}

  @Get()
  async getReservationInfo(@Query() query: GetReservationRequest) {
    return plainToInstance(
      GetReservationResponse,
      await this.reservationService.getReservationInfo(query.eventId, query.userId),
    );
  }

  @Post()
  async requestReservation(@Body() body: PostReservationRequest) {
    return this.accept(body.eventId, body.userId);
  }

  // The seed's README documents this form; its code has only the body form above. Both are served.
  @Post(':eventId/:userId')
  async requestReservationByPath(
    @Param('eventId', ParseIntPipe) eventId: number,
    @Param('userId', ParseIntPipe) userId: number,
  ) {
    return this.accept(eventId, userId);
  }

  private async accept(eventId: number, userId: number) {
    const job = await this.reservationService.reserveEvent(eventId, userId);
    this.acceptedCounts.add(eventId); // measurement addition (lib/bench.ts)
    return job;
  }
}

@Module({
  imports: [RedisQueueModule, BullModule.registerQueue({ name: RESERVATION_QUEUE })],
  providers: [ReservationService, ReservationRepository],
  controllers: [ReservationController],
  exports: [BullModule],
})
export class ReservationModule {}
