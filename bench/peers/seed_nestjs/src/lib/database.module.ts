import { DynamicModule, Global, Module } from '@nestjs/common';
import { Database, LOG_QUERIES } from './database';

/** The seed's PrismaModule: one Database for the whole app. */
@Global()
@Module({})
export class DatabaseModule {
  static forRoot(logQueries: boolean): DynamicModule {
    return {
      module: DatabaseModule,
      providers: [Database, { provide: LOG_QUERIES, useValue: logQueries }],
      exports: [Database],
    };
  }
}
