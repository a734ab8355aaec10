import type { QueryResult, QueryResultRow } from 'pg';

/** A pool or one client: repositories run their statements on whichever the caller holds. */
export interface Queryable {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  query<R extends QueryResultRow = any>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
}
