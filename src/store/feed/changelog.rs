//! The change-log table `tower_api_keys_changes`, as a poller reads it: the
//! poller's connection, opened from the query pool, and its queries, each
//! under the query deadline.

use std::time::Instant;

#[cfg(feature = "mysql")]
use super::GAP_WINDOW;
use super::{
    QUERY_DEADLINE,
    cursor::{Cursor, Observed, Settle},
};
use crate::store::conn::Pool;

pub(super) type SqlxError = sea_orm::sqlx::Error;

/// Most rows read by one query; a poll that gets this many asks again at once.
pub(super) const PAGE: i64 = 5_000;
/// Most ids read by one query when a poller starts.
const START_PAGE: i64 = 50_000;
/// Most rows one prune statement deletes.
pub(super) const PRUNE_LIMIT: u64 = 10_000;

/// A poller's connection.
pub(super) enum Conn {
    #[cfg(feature = "postgres")]
    Postgres(sea_orm::sqlx::PgConnection),
    #[cfg(feature = "mysql")]
    MySql(sea_orm::sqlx::MySqlConnection),
    #[cfg(feature = "sqlite")]
    Sqlite(sea_orm::sqlx::SqlitePool),
}

type Row = (i64, String);

/// Runs `$text` (written with `?` placeholders) with the integer `$binds`
/// and collects its rows as `$ty`, under the query deadline. PostgreSQL runs
/// it as one simple-protocol query with the integers written in: a pooler in
/// transaction mode may send a statement's parse and its bind to different
/// server connections.
macro_rules! fetch_all {
    ($conn:expr, $ty:ty, $text:expr, $binds:expr) => {{
        let text: &str = $text;
        let binds: &[i64] = $binds;
        let run = async {
            match $conn {
                #[cfg(feature = "postgres")]
                Conn::Postgres(connection) => {
                    use sea_orm::sqlx::FromRow;
                    let rows =
                        sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(inline(text, binds)))
                            .fetch_all(&mut *connection)
                            .await?;
                    rows.iter()
                        .map(<$ty>::from_row)
                        .collect::<Result<Vec<$ty>, _>>()
                }
                #[cfg(feature = "mysql")]
                Conn::MySql(connection) => {
                    let mut query = sea_orm::sqlx::query_as::<_, $ty>(
                        sea_orm::sqlx::AssertSqlSafe(String::from(text)),
                    );
                    for bind in binds {
                        query = query.bind(*bind);
                    }
                    query.fetch_all(&mut *connection).await
                }
                #[cfg(feature = "sqlite")]
                Conn::Sqlite(pool) => {
                    let mut query = sea_orm::sqlx::query_as::<_, $ty>(
                        sea_orm::sqlx::AssertSqlSafe(String::from(text)),
                    );
                    for bind in binds {
                        query = query.bind(*bind);
                    }
                    query.fetch_all(&*pool).await
                }
            }
        };
        match tokio::time::timeout(QUERY_DEADLINE, run).await {
            Ok(result) => result,
            Err(_) => Err(SqlxError::PoolTimedOut),
        }
    }};
}

/// `sql` with each `?` replaced by the next of `binds`.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn inline(sql: &str, binds: &[i64]) -> String {
    let mut out = String::with_capacity(sql.len() + binds.len() * 8);
    let mut binds = binds.iter();
    for c in sql.chars() {
        match (c, if c == '?' { binds.next() } else { None }) {
            ('?', Some(value)) => out.push_str(&value.to_string()),
            _ => out.push(c),
        }
    }
    out
}

/// Where a poller reads the change log (PostgreSQL through a transaction-mode
/// pooler too: its statements are never prepared under a name).
impl Pool {
    pub(super) async fn connect(&self) -> Result<Conn, SqlxError> {
        #[cfg(any(feature = "postgres", feature = "mysql"))]
        use sea_orm::sqlx::Connection;
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(pool) => {
                let options = pool.connect_options();
                let connect = sea_orm::sqlx::PgConnection::connect_with(&options);
                match tokio::time::timeout(super::CONNECT_DEADLINE, connect).await {
                    Ok(connection) => connection.map(Conn::Postgres),
                    Err(_) => Err(SqlxError::PoolTimedOut),
                }
            }
            #[cfg(feature = "mysql")]
            Self::MySql(pool) => {
                let options = pool.connect_options();
                let connect = sea_orm::sqlx::MySqlConnection::connect_with(&options);
                match tokio::time::timeout(super::CONNECT_DEADLINE, connect).await {
                    Ok(connection) => connection.map(Conn::MySql),
                    Err(_) => Err(SqlxError::PoolTimedOut),
                }
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(pool) => Ok(Conn::Sqlite(pool.clone())),
        }
    }

    /// How gaps settle; `lists_transactions` is false once the database
    /// refused to list its open transactions.
    #[cfg_attr(not(feature = "mysql"), allow(unused_variables))]
    pub(super) fn settle(&self, lists_transactions: bool) -> Settle {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => Settle::Snapshot,
            #[cfg(feature = "mysql")]
            Self::MySql(_) if lists_transactions => Settle::OpenTransactions,
            #[cfg(feature = "mysql")]
            Self::MySql(_) => Settle::After(GAP_WINDOW),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Settle::Serialized,
        }
    }
}

impl Conn {
    pub(super) async fn max_id(&mut self) -> Result<i64, SqlxError> {
        const SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM tower_api_keys_changes";
        let rows = fetch_all!(self, (i64,), SQL, &[])?;
        Ok(rows.first().map_or(0, |(max,)| *max))
    }

    async fn ids_above(&mut self, above: i64) -> Result<Vec<i64>, SqlxError> {
        const SQL: &str = "SELECT id FROM tower_api_keys_changes WHERE id > ? ORDER BY id LIMIT ?";
        let rows = fetch_all!(self, (i64,), SQL, &[above, START_PAGE])?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    pub(super) async fn rows_above(&mut self, above: i64) -> Result<Vec<Row>, SqlxError> {
        const SQL: &str = "SELECT id, public_key FROM tower_api_keys_changes \
                           WHERE id > ? ORDER BY id LIMIT ?";
        fetch_all!(self, Row, SQL, &[above, PAGE])
    }

    /// Rows in `ranges` (inclusive) with an id above `above`, a page at most.
    pub(super) async fn rows_in(
        &mut self,
        ranges: &[(i64, i64)],
        above: i64,
    ) -> Result<Vec<Row>, SqlxError> {
        let text = format!(
            "SELECT id, public_key FROM tower_api_keys_changes WHERE ({}) AND id > ? \
             ORDER BY id LIMIT ?",
            vec!["id BETWEEN ? AND ?"; ranges.len()].join(" OR ")
        );
        let mut binds: Vec<i64> = ranges
            .iter()
            .flat_map(|(start, end)| [*start, *end])
            .collect();
        binds.extend([above, PAGE]);
        fetch_all!(self, Row, &text, &binds)
    }

    /// What the database tells of its transactions now: MySQL/MariaDB the ids
    /// of the open ones, PostgreSQL its snapshot and WAL position.
    pub(super) async fn observe(&mut self) -> Result<(Observed, Option<String>), SqlxError> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => {
                const SQL: &str = "SELECT pg_snapshot_xmin(s)::text::bigint, \
                     pg_snapshot_xmax(s)::text::bigint, pg_current_wal_lsn()::text \
                     FROM pg_current_snapshot() AS s";
                let rows = fetch_all!(self, (i64, i64, String), SQL, &[])?;
                let (xmin, xmax, lsn) = rows.into_iter().next().ok_or(SqlxError::RowNotFound)?;
                Ok((Observed::Snapshot { xmin, xmax }, Some(lsn)))
            }
            #[cfg(feature = "mysql")]
            Self::MySql(_) => {
                const SQL: &str = "SELECT CAST(trx_id AS CHAR) FROM information_schema.INNODB_TRX";
                let open = fetch_all!(self, (String,), SQL, &[])?;
                Ok((
                    Observed::Open(open.into_iter().map(|(id,)| id).collect()),
                    None,
                ))
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Ok((Observed::Nothing, None)),
        }
    }

    /// Deletes up to [`PRUNE_LIMIT`] rows with an id at or below `through`
    /// (MySQL/MariaDB and SQLite; PostgreSQL prunes by marks of its own).
    pub(super) async fn prune(&mut self, through: i64) -> Result<u64, SqlxError> {
        let limit = i64::try_from(PRUNE_LIMIT).unwrap_or(i64::MAX);
        let run = async {
            match self {
                #[cfg(feature = "mysql")]
                Self::MySql(connection) => sea_orm::sqlx::query(
                    "DELETE FROM tower_api_keys_changes WHERE id <= ? ORDER BY id LIMIT ?",
                )
                .bind(through)
                .bind(limit)
                .execute(&mut *connection)
                .await
                .map(|done| done.rows_affected()),
                #[cfg(feature = "sqlite")]
                Self::Sqlite(pool) => sea_orm::sqlx::query(
                    "DELETE FROM tower_api_keys_changes WHERE id IN (\
                     SELECT id FROM tower_api_keys_changes WHERE id <= ? ORDER BY id LIMIT ?)",
                )
                .bind(through)
                .bind(limit)
                .execute(&*pool)
                .await
                .map(|done| done.rows_affected()),
                #[cfg(feature = "postgres")]
                Self::Postgres(_) => {
                    let _ = (through, limit);
                    Ok(0)
                }
            }
        };
        match tokio::time::timeout(QUERY_DEADLINE, run).await {
            Ok(result) => result,
            Err(_) => Err(SqlxError::PoolTimedOut),
        }
    }
}

/// Reads the whole log's ids into a starting cursor.
pub(super) async fn start(conn: &mut Conn, settle: Settle) -> Result<Cursor, SqlxError> {
    let now = Instant::now();
    let mut cursor = Cursor::starting_at(&[], settle, now);
    loop {
        let ids = conn.ids_above(cursor.last).await?;
        let full = ids.len() as i64 >= START_PAGE;
        for id in ids {
            cursor.saw(id, now);
        }
        if !full {
            return Ok(cursor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::inline;

    #[test]
    fn inline_writes_each_bind_in_place_of_its_placeholder() {
        assert_eq!(
            inline(
                "SELECT id WHERE id > ? AND id <= ? LIMIT ?",
                &[-1, 20, 5_000]
            ),
            "SELECT id WHERE id > -1 AND id <= 20 LIMIT 5000"
        );
        assert_eq!(inline("SELECT 1", &[]), "SELECT 1");
    }
}
