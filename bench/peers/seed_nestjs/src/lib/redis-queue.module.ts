import { BullModule, BullRootModuleOptions } from '@nestjs/bullmq';
import { Module } from '@nestjs/common';
import { ConfigService } from '@nestjs/config';

export const RESERVATION_QUEUE = 'reservation-queue';

/** As the seed's lib/redis-queue: one BullMQ connection configured from the environment. */
@Module({
  imports: [
    BullModule.forRootAsync({
      inject: [ConfigService],
      useFactory: (configService: ConfigService): BullRootModuleOptions => ({
        connection: {
          host: configService.getOrThrow<string>('REDIS_QUEUE_HOST'),
          port: Number(configService.getOrThrow<string>('REDIS_QUEUE_PORT')),
          password: configService.get<string>('REDIS_QUEUE_PASSWORD', ''),
        },
      }),
    }),
  ],
})
export class RedisQueueModule {}
