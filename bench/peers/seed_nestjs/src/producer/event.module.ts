// The seed's producer/src/event (controller, service, repository, DTOs), one file here.
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
} from '@nestjs/common';
import { Exclude, Expose, plainToInstance } from 'class-transformer';
import { IsDate, IsNotEmpty, IsNumber, IsString } from 'class-validator';
import { Database } from '../lib/database';

export class CreateEventRequest {
  @IsString()
  @IsNotEmpty()
  name: string;

  @IsDate()
  @IsNotEmpty()
  date: Date;

  @IsString()
  @IsNotEmpty()
  location: string;

  @IsNumber()
  @IsNotEmpty()
  maxTickets: number;
}

@Exclude()
export class CreateEventResponse {
  @Expose()
  id: number;
}

@Exclude()
export class GetEventResponse {
  @Expose()
  id: number;

  @Expose()
  name: string;

  @Expose()
  date: Date;

  @Expose()
  location: string;

  @Expose()
  maxTickets: number;

  @Expose()
  createdAt: Date;

  @Expose()
  updatedAt: Date;

  @Expose()
  deletedAt: Date;
}

export const EVENT_COLUMNS =
  '"public"."Event"."id", "public"."Event"."name", "public"."Event"."date", ' +
  '"public"."Event"."location", "public"."Event"."maxTickets", "public"."Event"."createdAt", ' +
  '"public"."Event"."updatedAt", "public"."Event"."deletedAt"';

@Injectable()
export class EventRepository {
  constructor(private readonly db: Database) {}

  async createEvent({ name, maxTickets, date, location }: CreateEventRequest) {
    const rows = await this.db.query(
      `INSERT INTO "public"."Event" ("name","date","location","maxTickets","updatedAt") ` +
        `VALUES ($1,$2,$3,$4,$5) RETURNING ${EVENT_COLUMNS}`,
      [name, date, location, maxTickets, new Date()],
    );
    return rows[0];
  }

  async getEventInfoByName(name: string) {
    const rows = await this.db.query(
      `SELECT ${EVENT_COLUMNS} FROM "public"."Event" WHERE "public"."Event"."name" = $1 LIMIT $2 OFFSET $3`,
      [name, 1, 0],
    );
    return rows[0] ?? null;
  }

  async getEventInfoById(eventId: number) {
    const rows = await this.db.query(
      `SELECT ${EVENT_COLUMNS} FROM "public"."Event" WHERE "public"."Event"."id" = $1 LIMIT $2 OFFSET $3`,
      [eventId, 1, 0],
    );
    return rows[0] ?? null;
  }
}

@Injectable()
export class EventService {
  constructor(private readonly eventRepository: EventRepository) {}

  async createEvent(params: CreateEventRequest) {
    const event = await this.eventRepository.getEventInfoByName(params.name);
    if (event) throw new BadRequestException('event already exists');
    const { id } = await this.eventRepository.createEvent(params);
    return { id };
  }

  async getEventInfo(eventId: number) {
    const event = await this.eventRepository.getEventInfoById(eventId);
    if (!event) throw new NotFoundException('no such event');
    return event;
  }
}

@Controller('event')
export class EventController {
  constructor(private readonly eventService: EventService) {}

  @Post()
  async createEvent(@Body() params: CreateEventRequest) {
    return plainToInstance(CreateEventResponse, await this.eventService.createEvent(params));
  }

  @Get(':eventId')
  async getEventInfo(@Param('eventId', ParseIntPipe) eventId: number) {
    return plainToInstance(GetEventResponse, await this.eventService.getEventInfo(eventId));
  }
}

@Module({
  providers: [EventService, EventRepository],
  controllers: [EventController],
})
export class EventModule {}
