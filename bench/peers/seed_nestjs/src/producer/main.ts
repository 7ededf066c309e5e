// The seed's producer (06-redis-queue/producer): the REST API that queues reservation requests.
import 'reflect-metadata';
import { BadRequestException, Logger, Module, ValidationError, ValidationPipe } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { NestFactory } from '@nestjs/core';
import { AcceptedCountsModule } from '../lib/bench';
import { DatabaseModule } from '../lib/database.module';
import { BenchModule } from './bench.module';
import { EventModule } from './event.module';
import { ReservationModule } from './reservation.module';
import { UserModule } from './user.module';

@Module({
  imports: [
    // The seed reads environments/.env.<NODE_ENV>; the benchmark passes the same variables.
    ConfigModule.forRoot({ isGlobal: true, ignoreEnvFile: true }),
    DatabaseModule.forRoot(false),
    AcceptedCountsModule,
    UserModule,
    EventModule,
    ReservationModule,
    BenchModule,
  ],
})
export class AppModule {}

async function bootstrap() {
  const app = await NestFactory.create(AppModule, { bufferLogs: true });
  const configService = app.get<ConfigService>(ConfigService);
  const servicePort = configService.getOrThrow<number>('SERVICE_PORT');
  // The seed also serves Swagger at /api outside 'prod'; left out (no cost per request).
  app.useGlobalPipes(
    new ValidationPipe({
      whitelist: true,
      forbidNonWhitelisted: true,
      transform: true,
      transformOptions: { enableImplicitConversion: true },
      exceptionFactory: (validationErrors: ValidationError[]) =>
        new BadRequestException(validationErrors),
    }),
  );
  await app.listen(servicePort, '127.0.0.1');
  new Logger().log(`producer listening on http://127.0.0.1:${servicePort}`);
}
bootstrap();
