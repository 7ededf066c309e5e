import { Inject, Injectable, Logger, OnModuleDestroy } from '@nestjs/common';
import { ConfigService } from '@nestjs/config';
import { availableParallelism } from 'os';
import { Pool, PoolClient } from 'pg';

/** True in the consumer: the seed's consumer logs every query Prisma runs (three lines each). */
export const LOG_QUERIES = Symbol('LOG_QUERIES');

export interface Queryable {
  query<T = any>(sql: string, params?: unknown[]): Promise<T[]>;
}

/**
 * Stands in for the seed's PrismaService: Prisma's CLI downloads its engines at install time,
 * which this machine cannot, so the same queries Prisma sends go through `pg` instead. The pool
 * is Prisma's default size (2 x CPUs + 1); `transaction` is Prisma's interactive transaction
 * (BEGIN, the callback's queries, COMMIT; ROLLBACK when the callback throws), at PostgreSQL's
 * default isolation (read committed), as Prisma's.
 */
@Injectable()
export class Database implements Queryable, OnModuleDestroy {
  private readonly pool: Pool;

  constructor(
    config: ConfigService,
    @Inject(LOG_QUERIES) private readonly logQueries: boolean,
  ) {
    this.pool = new Pool({
      connectionString: config.getOrThrow<string>('DATABASE_URL'),
      max: availableParallelism() * 2 + 1,
    });
  }

  query<T = any>(sql: string, params: unknown[] = []): Promise<T[]> {
    return this.run<T>(this.pool, sql, params);
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    const tx: Queryable = { query: (sql, params = []) => this.run(client, sql, params) };
    try {
      await tx.query('BEGIN');
      const result = await fn(tx);
      await tx.query('COMMIT');
      return result;
    } catch (error) {
      await tx.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  private async run<T>(target: Pool | PoolClient, sql: string, params: unknown[]): Promise<T[]> {
    const started = Date.now();
    const result = await target.query(sql, params);
    if (this.logQueries) {
      // The seed's PrismaService: `$on('query', ...)` logging query, params and duration.
      Logger.log('Query: ' + sql);
      Logger.log('Params: ' + JSON.stringify(params));
      Logger.log('Duration: ' + (Date.now() - started));
    }
    return result.rows as T[];
  }

  async onModuleDestroy() {
    await this.pool.end();
  }
}
