//! The pool hands out connections without a test query, so it must still never hand out one the
//! server has closed.

use diesel::sql_types::Integer;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use taskflow_test_support::db::{count, fresh_database};

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct Terminated {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    terminated: bool,
}

async fn backend_pid(pool: &taskflow_db::DbPool) -> i32 {
    let mut conn = pool.get().await.expect("a connection");
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .await
        .expect("the first statement on a pooled connection")
        .pid
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced_not_handed_out() {
    let url = fresh_database().await;
    let pool = taskflow_db::pool(&url, 1).expect("pool");
    let other = taskflow_db::pool(&url, 1).expect("pool");
    let first = backend_pid(&pool).await;

    let Terminated { terminated } =
        diesel::sql_query("SELECT pg_terminate_backend($1) AS terminated")
            .bind::<Integer, _>(first)
            .get_result(&mut other.get().await.unwrap())
            .await
            .expect("terminate");
    assert!(terminated);
    // The server has ended the session once its process is gone.
    let sql = format!("SELECT count(*)::int8 AS n FROM pg_stat_activity WHERE pid = {first}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(&other, &sql).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "session {first} still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let second = backend_pid(&pool).await;
    assert_ne!(second, first, "a new session, on the first try");
}
