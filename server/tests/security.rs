//! Issue 13's hardening, each finding as an attack or misuse that must
//! fail: calls without the shared secret, servers exposed without one.

use std::time::Duration;

use basalt_server::auth::BearerToken;
use basalt_server::config::{ServeFile, ServeOptions, StorageChoice};
use basalt_server::proto;
use basalt_server::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use basalt_server::server::{self, ServerHandle};
use tonic::Code;
use tonic::transport::Channel;

const TOKEN: &str = "test-token-0123456789";
const PREFIX: &str = "/runtime/webhooks/durabletask";

async fn serve_with_token() -> ServerHandle {
    server::start(ServeOptions {
        storage: StorageChoice::Memory,
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        partitions: 2,
        auth_token: Some(BearerToken::new(TOKEN).expect("token")),
        ..ServeOptions::default()
    })
    .await
    .expect("server starts")
}

/// Sends `authorization` with every call, as the SDKs do with metadata.
#[derive(Clone)]
struct Sends(&'static str);

impl tonic::service::Interceptor for Sends {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = self
            .0
            .parse()
            .map_err(|_| tonic::Status::internal("bad value"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

#[tokio::test]
async fn grpc_calls_need_the_token() {
    let handle = serve_with_token().await;
    let channel = Channel::from_shared(format!("http://{}", handle.grpc_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    let mut bare = TaskHubSidecarServiceClient::new(channel.clone());
    let refused = bare.hello(()).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let start = proto::CreateInstanceRequest {
        instance_id: "sneaky".into(),
        name: "anything".into(),
        ..Default::default()
    };
    let refused = bare
        .start_instance(start.clone())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);

    for wrong in [
        "Bearer test-token-012345678",
        "Bearer test-token-01234567890",
        "Basic test-token-0123456789",
        "test-token-0123456789",
    ] {
        let mut client =
            TaskHubSidecarServiceClient::with_interceptor(channel.clone(), Sends(wrong));
        let refused = client.hello(()).await.expect_err(wrong);
        assert_eq!(refused.code(), Code::Unauthenticated, "{wrong}");
    }

    let mut client = TaskHubSidecarServiceClient::with_interceptor(
        channel.clone(),
        Sends("Bearer test-token-0123456789"),
    );
    client.hello(()).await.expect("hello with the token");
    client
        .start_instance(start)
        .await
        .expect("start with the token");
    let state = client
        .get_instance(proto::GetInstanceRequest {
            instance_id: "sneaky".into(),
            ..Default::default()
        })
        .await
        .expect("get with the token")
        .into_inner();
    assert!(state.exists);
    handle.stop().await;
}

#[tokio::test]
async fn http_requests_need_the_token_but_health_probes_do_not() {
    let handle = serve_with_token().await;
    let base = format!("http://{}", handle.http_addr().expect("http on"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "liveness needs no token");

    for path in ["/metrics", &format!("{PREFIX}/instances")] {
        let refused = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(refused.status(), 401, "{path} without a token");
        assert_eq!(
            refused
                .headers()
                .get("www-authenticate")
                .map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let wrong = http
            .get(format!("{base}{path}"))
            .bearer_auth("test-token-012345678X")
            .send()
            .await
            .expect("get");
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let right = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get");
        assert_eq!(right.status(), 200, "{path} with the token");
    }

    // A start without the token changes nothing.
    let refused = http
        .post(format!("{base}{PREFIX}/orchestrators/greet/h1"))
        .header("content-type", "application/json")
        .body("\"x\"")
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 401);
    let missing = http
        .get(format!("{base}{PREFIX}/instances/h1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404, "the refused start created nothing");
    let started = http
        .post(format!("{base}{PREFIX}/orchestrators/greet/h1"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("\"x\"")
        .send()
        .await
        .expect("post");
    assert_eq!(started.status(), 202);
    handle.stop().await;
}

#[test]
fn a_server_exposed_beyond_loopback_needs_a_token_or_insecure() {
    let exposed = |grpc: &str, http: &str| ServeFile {
        grpc_addr: Some(grpc.parse().expect("addr")),
        http_addr: Some(http.into()),
        ..ServeFile::default()
    };
    let refused = exposed("0.0.0.0:4001", "127.0.0.1:8080")
        .into_options()
        .expect_err("gRPC on every interface without a token");
    assert!(
        refused.to_string().contains("--auth-token-file"),
        "{refused}"
    );
    let refused = exposed("127.0.0.1:4001", "[::]:8080")
        .into_options()
        .expect_err("HTTP on every interface without a token");
    assert!(refused.to_string().contains("[::]:8080"), "{refused}");
    exposed("127.0.0.1:4001", "[::1]:8080")
        .into_options()
        .expect("loopback only");
    exposed("0.0.0.0:4001", "off")
        .into_options()
        .expect_err("gRPC exposed, HTTP off");
    ServeFile {
        insecure: Some(true),
        ..exposed("0.0.0.0:4001", "0.0.0.0:8080")
    }
    .into_options()
    .expect("--insecure allows it");

    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let options = ServeFile {
        auth_token_file: Some(token_file.clone()),
        ..exposed("0.0.0.0:4001", "0.0.0.0:8080")
    }
    .into_options()
    .expect("a token allows it");
    assert_eq!(
        options.auth_token,
        Some(BearerToken::new(TOKEN).expect("token"))
    );
    assert!(
        !format!("{options:?}").contains(TOKEN),
        "the token stays out of logs"
    );

    std::fs::write(&token_file, "short\n").expect("write token");
    let refused = ServeFile {
        auth_token_file: Some(token_file),
        ..ServeFile::default()
    }
    .into_options()
    .expect_err("a short token");
    assert!(refused.to_string().contains("at least 16"), "{refused}");
}

#[tokio::test]
async fn the_cli_sends_the_token_from_its_file() {
    let handle = serve_with_token().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("write token");
    let server = format!("http://{}", handle.grpc_addr());
    let list = move |token: Option<&std::path::Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_basalt"));
        command.args(["list", "--server", &server]);
        command.env_remove("BASALT_AUTH_TOKEN_FILE");
        if let Some(path) = token {
            command.arg("--auth-token-file").arg(path);
        }
        command.output().expect("run basalt list")
    };
    let (without, with) = tokio::task::spawn_blocking({
        let token_file = token_file.clone();
        move || (list(None), list(Some(&token_file)))
    })
    .await
    .expect("cli runs");
    assert!(!without.status.success(), "listing without the token");
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(stderr.contains("bearer token"), "{stderr}");
    assert!(
        with.status.success(),
        "listing with the token: {}",
        String::from_utf8_lossy(&with.stderr)
    );
    handle.stop().await;
}
