//! Test databases: the server is `DATABASE_URL` (a role that may create databases); each test
//! gets a copy of a template migrated once per test process, which takes milliseconds.

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use taskflow_db::migrations::create_database;
use taskflow_db::DbPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The server named by `DATABASE_URL`; `./dev test` points it at a user with CREATEDB.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must name a PostgreSQL server where tests may create databases (./dev test sets it)",
    )
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A migrated database that per-test databases are cloned from: one per test process.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("tf_template_{}", std::process::id());
            let mut conn = AsyncPgConnection::establish(&admin_url())
                .await
                .expect("connect to DATABASE_URL");
            drop_stale(&mut conn).await;
            create_database(&admin_url(), &name, None)
                .await
                .expect("create template database");
            name
        })
        .await
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// Databases left behind by earlier runs (tests do not drop theirs, so a failure can be inspected).
async fn drop_stale(conn: &mut AsyncPgConnection) {
    let names: Vec<Name> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'tf\\_%' \
         AND (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = pg_database.datname) = 0",
    )
    .load(conn)
    .await
    .unwrap_or_default();
    for Name { datname } in names {
        // Names end in the pid of the test process that made them; another run may be going on
        // right now (its template has no connections between clones), so keep a live process's.
        let owner_alive = datname
            .rsplit_once('_')
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !owner_alive {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{datname}\""))
                .execute(conn)
                .await;
        }
    }
}

/// A fresh, migrated database; returns its URL.
pub async fn fresh_database() -> String {
    let template = template().await;
    let name = format!("tf_{}_{}", Uuid::now_v7().simple(), std::process::id());
    create_database(&admin_url(), &name, Some(template))
        .await
        .expect("create test database")
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Every outbox row, sent (`outbox_sent`) or not (`outbox`), as a subquery to select from:
/// `seq`, `topic`, `event_type`, `payload`.
pub const EVERY_OUTBOX_ROW: &str = "(SELECT seq, topic, event_type, payload FROM outbox \
     UNION ALL SELECT seq, topic, event_type, payload FROM outbox_sent) every_row";

/// The `n` that `sql` (a `SELECT count(*) AS n ...`) returns.
pub async fn count(pool: &DbPool, sql: &str) -> i64 {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// Run a statement.
pub async fn execute(pool: &DbPool, sql: &str) {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
