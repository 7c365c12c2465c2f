use std::convert::Infallible;
use std::sync::Mutex;

use tsoracle_core::PeerEndpoint;

use super::*;

/// A gate that admits one epoch and records what it was asked.
struct FixedGate {
    leads: Option<Epoch>,
    asked: Mutex<Vec<Epoch>>,
}

impl ReplyGate for FixedGate {
    fn check(&self, epoch: Epoch) -> Result<(), NotServing> {
        self.asked.lock().unwrap().push(epoch);
        if self.leads == Some(epoch) {
            Ok(())
        } else {
            Err(NotServing {
                leader_endpoint: Some(PeerEndpoint::try_from("127.0.0.1:7002".to_owned()).unwrap()),
                leader_epoch: Some(Epoch(99)),
            })
        }
    }
}

fn gate(leads: Option<Epoch>) -> Arc<FixedGate> {
    Arc::new(FixedGate {
        leads,
        asked: Mutex::new(Vec::new()),
    })
}

/// A unary success as tonic encodes it: one length-prefixed message, then
/// an OK status in the trailers.
fn unary(message: &impl Message) -> http::Response<Body> {
    let bytes = message.encode_to_vec();
    let mut data = Vec::with_capacity(bytes.len() + 5);
    data.push(0);
    data.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    data.extend_from_slice(&bytes);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    http::Response::new(rebuild(Bytes::from(data), Some(trailers)))
}

/// A service answering every call with the response `make` builds.
#[derive(Clone)]
struct Answer(fn() -> http::Response<Body>);

impl Service<http::Request<()>> for Answer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        std::future::ready(Ok((self.0)()))
    }
}

const EPOCH: Epoch = Epoch(7);

fn get_ts_reply() -> http::Response<Body> {
    let (epoch_hi, epoch_lo) = EPOCH.to_wire();
    unary(&pb::GetTsResponse {
        physical_ms: 1_000,
        logical_start: 3,
        count: 1,
        epoch_hi,
        epoch_lo,
    })
}

fn get_seq_reply() -> http::Response<Body> {
    let (hi, lo) = EPOCH.to_wire();
    unary(&pb::GetSeqResponse {
        key: "k".to_owned(),
        start: 10,
        count: 2,
        epoch: Some(pb::EpochWire { hi, lo }),
    })
}

fn idle_max_safe_reply() -> http::Response<Body> {
    unary(&pb::GetCurrentMaxSafeResponse {
        max_safe_physical_ms: 0,
        epoch_hi: 0,
        epoch_lo: 0,
    })
}

fn stale_max_safe_reply() -> http::Response<Body> {
    unary(&pb::GetCurrentMaxSafeResponse {
        max_safe_physical_ms: 500,
        epoch_hi: 0,
        epoch_lo: 0,
    })
}

fn compressed_reply() -> http::Response<Body> {
    let mut response = get_ts_reply();
    *response.body_mut() = rebuild(Bytes::from_static(&[1, 0, 0, 0, 0]), None);
    response
}

fn error_reply() -> http::Response<Body> {
    Status::unavailable("down").into_http()
}

async fn call(
    gate: &Arc<FixedGate>,
    path: &str,
    answer: fn() -> http::Response<Body>,
) -> http::Response<Body> {
    let mut service =
        ReplyGateLayer::new(Arc::clone(gate) as Arc<dyn ReplyGate>).layer(Answer(answer));
    let request = http::Request::builder().uri(path).body(()).unwrap();
    service.call(request).await.unwrap()
}

fn status_of(response: &http::Response<Body>) -> Option<Status> {
    Status::from_header_map(response.headers())
}

async fn body_of(response: http::Response<Body>) -> (Bytes, Option<HeaderMap>) {
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test]
async fn a_reply_under_the_led_epoch_passes_unchanged() {
    let gate = gate(Some(EPOCH));
    let expected = body_of(get_ts_reply()).await;
    let response = call(&gate, "/tsoracle.v1.TsoService/GetTs", get_ts_reply).await;
    assert!(status_of(&response).is_none());
    let (data, trailers) = body_of(response).await;
    assert_eq!((data, trailers), expected);
    assert_eq!(*gate.asked.lock().unwrap(), vec![EPOCH]);
}

#[tokio::test]
async fn a_reply_after_the_lease_is_gone_becomes_not_leader_with_a_hint() {
    for (path, answer) in [
        ("/tsoracle.v1.TsoService/GetTs", get_ts_reply as fn() -> _),
        ("/tsoracle.v1.TsoService/GetSeq", get_seq_reply),
    ] {
        let gate = gate(None);
        let response = call(&gate, path, answer).await;
        let status = status_of(&response).expect("a status in the headers");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{path}");
        let hint = match pb::decode_leader_hint(&status) {
            pb::LeaderHintLookup::Decoded(hint) => hint,
            pb::LeaderHintLookup::Absent | pb::LeaderHintLookup::Malformed => {
                panic!("no usable hint for {path}")
            }
        };
        assert_eq!(hint.leader_endpoint.as_deref(), Some("127.0.0.1:7002"));
        assert_eq!(hint.leader_epoch, Some(pb::EpochWire { hi: 0, lo: 99 }));
        assert_eq!(*gate.asked.lock().unwrap(), vec![EPOCH]);
        let (data, _) = body_of(response).await;
        assert!(data.is_empty(), "the refused reply's value leaked");
    }
}

#[tokio::test]
async fn replies_without_data_pass_without_asking() {
    let gate = gate(None);
    for (path, answer) in [
        ("/tsoracle.v1.TsoService/GetTs", error_reply as fn() -> _),
        ("/tsoracle.v1.TsoService/ReleaseLease", get_ts_reply),
        ("/grpc.health.v1.Health/Check", get_ts_reply),
        (
            "/tsoracle.v1.TsoService/GetCurrentMaxSafe",
            idle_max_safe_reply,
        ),
    ] {
        let response = call(&gate, path, answer).await;
        let expected = status_of(&answer()).map(|s| s.code());
        assert_eq!(status_of(&response).map(|s| s.code()), expected, "{path}");
    }
    assert!(gate.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_value_under_no_epoch_or_an_unreadable_reply_is_held_back() {
    let gate = gate(Some(EPOCH));
    let stale = call(
        &gate,
        "/tsoracle.v1.TsoService/GetCurrentMaxSafe",
        stale_max_safe_reply,
    )
    .await;
    assert_eq!(
        status_of(&stale).map(|s| s.code()),
        Some(tonic::Code::FailedPrecondition)
    );
    let unreadable = call(&gate, "/tsoracle.v1.TsoService/GetTs", compressed_reply).await;
    assert_eq!(
        status_of(&unreadable).map(|s| s.code()),
        Some(tonic::Code::FailedPrecondition)
    );
}
