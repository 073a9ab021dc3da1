//! The issuer a database was set up with (issue 26, finding 2): a replica
//! started with another `MAYFLY_ISSUER` used to move the admin's grant to its
//! own URL, silently locking the admin out of every correctly configured
//! replica. Now it refuses to start, naming both, unless told to move. And
//! a second server on one SQLite data directory is refused outright.

use mayfly::{Config, Options};

use crate::harness::{self, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(a_replica_with_another_issuer_refuses_to_start_and_the_database_moves_only_when_told,);

#[tokio::test]
async fn a_second_server_on_one_sqlite_data_directory_is_refused_until_the_first_stops() {
    let app = TestApp::on(Backend::Sqlite).start().await;
    let second = harness::config(&app.db, "http://second.test");
    let refused = match mayfly::prepare(Options::new(second)).await {
        Ok(_) => panic!("two servers on one SQLite database"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("another mayfly process"), "{refused}");
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK, "the first server is untouched");
    let db = app.stop().await;
    let again = TestApp::on_db(db).start().await;
    again.global_admin_token().await;
}

const SET_UP_AS: &str = "http://mayfly.test";
const OTHER: &str = "http://other.test";

fn as_issuer(issuer: &'static str, change_issuer: bool) -> impl Fn(Config) -> Config + Send + 'static {
    move |c| Config {
        issuer: issuer.into(),
        change_issuer,
        ..c
    }
}

async fn a_replica_with_another_issuer_refuses_to_start_and_the_database_moves_only_when_told(b: Backend) {
    let app = TestApp::on(b).config(as_issuer(SET_UP_AS, false)).start().await;
    app.global_admin_token().await;
    let db = app.stop().await;

    let wrong = Config {
        change_issuer: false,
        ..harness::config(&db, OTHER)
    };
    let refused = match mayfly::prepare(Options::new(wrong)).await {
        Ok(_) => panic!("a replica with another issuer started"),
        Err(e) => e.to_string(),
    };
    for needle in [SET_UP_AS, OTHER, "--change-issuer"] {
        assert!(refused.contains(needle), "the refusal names {needle}: {refused}");
    }

    // Nothing moved: the correctly configured replica's admin still gets its token.
    let app = TestApp::on_db(db).config(as_issuer(SET_UP_AS, false)).start().await;
    app.global_admin_token().await;
    let db = app.stop().await;

    // Told to move, the admin's grant follows the new issuer, and the old one is refused from then on.
    let app = TestApp::on_db(db).config(as_issuer(OTHER, true)).start().await;
    assert_eq!(app.issuer, OTHER);
    app.global_admin_token().await;
    let db = app.stop().await;
    let back = Config {
        change_issuer: false,
        ..harness::config(&db, SET_UP_AS)
    };
    assert!(
        mayfly::prepare(Options::new(back)).await.is_err(),
        "the database now belongs to {OTHER}"
    );
}
