//! The PostgreSQL store's schema and how a database gets it: versioned
//! steps, each applied once, in order, in one transaction with its record
//! in `meshplay_schema`, under an advisory lock so that two masters
//! starting on one database at the same moment do not both apply it.

use crate::master::store::StoreError;
use deadpool_postgres::Pool;

/// Distinguishes our advisory lock from any other application's.
const MIGRATION_LOCK: i64 = 0x6d65_7368_706c_6179; // "meshplay"

/// The schema, one step per version; a database at version N gets the
/// steps after N. A step, once released, never changes.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
    CREATE TABLE kv (
        tenant_type text COLLATE "C" NOT NULL,
        tenant_id text COLLATE "C" NOT NULL,
        scope bytea NOT NULL,
        key bytea NOT NULL,
        value bytea NOT NULL,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        PRIMARY KEY (tenant_type, tenant_id, scope, key)
    );
    CREATE TABLE global_kv (
        scope bytea NOT NULL,
        key bytea NOT NULL,
        version bigint NOT NULL,
        owner_type text COLLATE "C",
        owner_id text COLLATE "C",
        entry bytea NOT NULL,
        PRIMARY KEY (scope, key, version)
    );
    CREATE TABLE tenant_states (
        tenant_type text COLLATE "C" NOT NULL,
        tenant_id text COLLATE "C" NOT NULL,
        entry bytea NOT NULL,
        PRIMARY KEY (tenant_type, tenant_id)
    );
    CREATE TABLE catalogue (key text COLLATE "C" PRIMARY KEY, bytes bytea NOT NULL);
    CREATE TABLE tokens (id text COLLATE "C" PRIMARY KEY, token bytea NOT NULL);
    CREATE TABLE audit (seq bigint PRIMARY KEY, entry bytea NOT NULL);
    CREATE SEQUENCE audit_seq START 1;
    "#,
    ),
    (
        2,
        r#"
    CREATE TABLE vars (key bytea PRIMARY KEY, var bytea NOT NULL);
    "#,
    ),
    (
        3,
        r#"
    CREATE TABLE timers (
        id bigint PRIMARY KEY,
        tenant_type text COLLATE "C" NOT NULL,
        tenant_id text COLLATE "C" NOT NULL,
        event text NOT NULL,
        data bytea NOT NULL,
        due_at bigint NOT NULL,
        attempt integer NOT NULL,
        schedule text
    );
    CREATE INDEX timers_due ON timers (due_at, id);
    CREATE INDEX timers_tenant ON timers (tenant_type, tenant_id, id);
    CREATE SEQUENCE timer_seq START 1;
    CREATE TABLE schedules (
        tenant_type text COLLATE "C" NOT NULL,
        tenant_id text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        schedule bytea NOT NULL,
        PRIMARY KEY (tenant_type, tenant_id, name)
    );
    "#,
    ),
    (
        4,
        // Leadership among masters that share this database (see
        // `super::lease`): one row with the lease, and a fence on every
        // table a master writes. A session that says which epoch it writes
        // for (`meshplay.epoch`) may write only while that epoch leads; a
        // session that says nothing (a single master, `store copy`) is not
        // fenced.
        r#"
    CREATE TABLE leadership (
        id smallint PRIMARY KEY CHECK (id = 1),
        epoch bigint NOT NULL,
        holder text NOT NULL,
        api_addr text NOT NULL,
        mesophyll_addr text NOT NULL,
        expires_at timestamptz NOT NULL
    );
    INSERT INTO leadership VALUES (1, 0, '', '', '', 'epoch');
    CREATE FUNCTION meshplay_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
    DECLARE
        mine text := current_setting('meshplay.epoch', true);
    BEGIN
        IF mine IS NULL OR mine = '' THEN
            RETURN NULL;
        END IF;
        IF mine::bigint IS DISTINCT FROM (SELECT epoch FROM leadership WHERE id = 1) THEN
            RAISE EXCEPTION 'meshplay: epoch % does not lead', mine USING ERRCODE = 'MP001';
        END IF;
        RETURN NULL;
    END
    $fence$;
    CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON kv FOR EACH STATEMENT EXECUTE FUNCTION meshplay_fence();
    CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON global_kv FOR EACH STATEMENT EXECUTE FUNCTION meshplay_fence();
    CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON tenant_states FOR EACH STATEMENT EXECUTE FUNCTION meshplay_fence();
    CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON catalogue FOR EACH STATEMENT EXECUTE FUNCTION meshplay_fence();
    CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON tokens FOR EACH STATEMENT EXECUTE FUNCTION meshplay_fence();
    CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON audit FOR EACH STATEMENT EXECUTE FUNCTION meshplay_fence();
    CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON vars FOR EACH STATEMENT EXECUTE FUNCTION meshplay_fence();
    CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON timers FOR EACH STATEMENT EXECUTE FUNCTION meshplay_fence();
    CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE ON schedules FOR EACH STATEMENT EXECUTE FUNCTION meshplay_fence();
    "#,
    ),
    (
        5,
        // The masters competing for the lease, each saying where it
        // listens every time it asks or renews, so that any of them can
        // list the standbys. Not fenced: a standby writes its own row.
        r#"
    CREATE TABLE masters (
        id text PRIMARY KEY,
        api_addr text NOT NULL,
        mesophyll_addr text NOT NULL,
        seen_at timestamptz NOT NULL
    );
    "#,
    ),
];

/// Applies the migrations the database lacks; returns its version.
pub async fn migrate(pool: &Pool) -> Result<i32, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS meshplay_schema (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM meshplay_schema", &[])
        .await?;
    let had: i32 = row.get(0);
    let mut version = had;
    for (step, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > had) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO meshplay_schema (version) VALUES ($1)", &[step])
            .await?;
        tracing::info!(version = step, "store schema migrated");
        version = *step;
    }
    tx.commit().await?;
    Ok(version)
}
