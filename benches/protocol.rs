//! The protocol's hot paths: encoding and decoding every Mesophyll message,
//! and the shard function that picks a tenant's worker.
//!
//! `cargo bench --bench protocol`

use criterion::{Criterion, criterion_group, criterion_main};
use meshplay::master::shard;
use meshplay::mesophyll::codec;
use meshplay::mesophyll::message::{
    ClientMessage, ErrorKind, Event, RemoteError, ServerMessage, Tenant,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::hint::black_box;

fn tenant() -> Tenant {
    Tenant {
        kind: "user".into(),
        id: "1234567890".into(),
    }
}

fn event() -> Event {
    Event {
        name: "member_join".into(),
        data: json!({"name": "Ada", "roles": ["admin", "dev"], "n": 42}).into(),
        ..Default::default()
    }
}

fn server_messages() -> Vec<(&'static str, ServerMessage)> {
    vec![
        (
            "hello",
            ServerMessage::Hello {
                protocol: 1,
                worker_id: 3,
                heartbeat_interval_ms: 1000,
                heartbeat_timeout_ms: 5000,
                egress: None,
                max_event_hops: None,
            },
        ),
        (
            "dispatch_event",
            ServerMessage::DispatchEvent {
                req_id: Some(77),
                tenant: tenant(),
                event: event(),
                deadline_ms: 5000,
            },
        ),
        (
            "run_script",
            ServerMessage::RunScript {
                req_id: 78,
                tenant: tenant(),
                name: "script".into(),
                code: "return 1 + 1".into(),
                event: event(),
                deadline_ms: 5000,
            },
        ),
        (
            "drop_tenant",
            ServerMessage::DropTenant {
                req_id: 79,
                tenant: tenant(),
            },
        ),
        (
            "tenant_state_changed",
            ServerMessage::TenantStateChanged {
                req_id: None,
                tenant: tenant(),
                state: None,
            },
        ),
        (
            "plugins_changed",
            ServerMessage::CatalogueChanged { revision: 9 },
        ),
        ("shutdown", ServerMessage::Shutdown { grace_ms: 5000 }),
    ]
}

fn client_messages() -> Vec<(&'static str, ClientMessage)> {
    vec![
        (
            "dispatch_response_ok",
            ClientMessage::DispatchResponse {
                req_id: 77,
                result: Ok(json!([{"plugin": "echo", "value": {"data": 42}}]).into()),
            },
        ),
        (
            "dispatch_response_err",
            ClientMessage::DispatchResponse {
                req_id: 78,
                result: Err(RemoteError::new(
                    ErrorKind::Timeout,
                    "ran past its deadline",
                )),
            },
        ),
        (
            "heartbeat",
            ClientMessage::Heartbeat {
                in_flight: 3,
                vms: 120,
                rss_bytes: 40 << 20,
                bad_frames: 0,
                filters: vec![],
                filter_metrics: vec![],
                egress: vec![],
                hop_limited: 0,
            },
        ),
    ]
}

fn round_trip<T: Serialize + DeserializeOwned>(c: &mut Criterion, name: &str, msg: &T) {
    let bytes = codec::encode(msg).unwrap();
    c.bench_function(&format!("codec/encode/{name}"), |b| {
        b.iter(|| codec::encode(black_box(msg)).unwrap())
    });
    c.bench_function(&format!("codec/decode/{name}"), |b| {
        b.iter(|| codec::decode::<T>(black_box(&bytes)).unwrap())
    });
}

fn codec_benches(c: &mut Criterion) {
    for (name, msg) in server_messages() {
        round_trip(c, name, &msg);
    }
    for (name, msg) in client_messages() {
        round_trip(c, name, &msg);
    }
}

fn shard_benches(c: &mut Criterion) {
    let t = tenant();
    c.bench_function("shard/worker_for/16", |b| {
        b.iter(|| shard::worker_for(black_box(&t), black_box(16)))
    });
}

criterion_group!(benches, codec_benches, shard_benches);
criterion_main!(benches);
