//! Issue 13's hardening, each finding as an attack or misuse that must
//! fail: calls without the shared secret, servers exposed without one.

mod common;

use std::time::Duration;

use basalt_server::auth::BearerToken;
use basalt_server::config::{HttpLimits, ServeFile, ServeOptions, StorageChoice, TlsFiles};
use basalt_server::proto;
use basalt_server::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use basalt_server::server::{self, ServerHandle};
use tonic::Code;
use tonic::transport::Channel;

const TOKEN: &str = "test-token-0123456789";
const PREFIX: &str = "/runtime/webhooks/durabletask";

async fn serve_with_token() -> ServerHandle {
    let token = BearerToken::new(TOKEN).expect("token");
    serve_plain(|o| o.auth_token = Some(token)).await.0
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
    let http = http_client();

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

async fn serve_plain(configure: impl FnOnce(&mut ServeOptions)) -> (ServerHandle, String) {
    let mut options = ServeOptions {
        storage: StorageChoice::Memory,
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        partitions: 2,
        ..ServeOptions::default()
    };
    configure(&mut options);
    let handle = server::start(options).await.expect("server starts");
    let base = format!("http://{}", handle.http_addr().expect("http on"));
    (handle, base)
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Polls an instance's status until `wanted` (or fails after 10 s).
async fn wait_status(http: &reqwest::Client, base: &str, id: &str, wanted: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = http
            .get(format!("{base}{PREFIX}/instances/{id}"))
            .send()
            .await
            .expect("status");
        if response.status() != 404 {
            let body: serde_json::Value = response.json().await.expect("json");
            if body["runtimeStatus"] == wanted {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{id} never {wanted}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(
    http: &reqwest::Client,
    url: String,
    content_type: Option<&str>,
    origin: Option<&str>,
) -> reqwest::StatusCode {
    let mut request = http.post(url).body("\"x\"");
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.expect("post").status()
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let (handle, base) = serve_plain(|_| {}).await;
    let http = http_client();
    let json = Some("application/json");
    let evil = Some("https://evil.example");

    // What a page on another site can send without a preflight.
    for (content_type, origin, wanted) in [
        (Some("text/plain"), evil, 403),
        (Some("text/plain"), None, 415),
        (Some("application/x-www-form-urlencoded"), None, 415),
        (None, None, 415),
        (json, evil, 403),
        (json, Some("null"), 403),
    ] {
        let status = post(
            &http,
            format!("{base}{PREFIX}/orchestrators/anything/csrf-start"),
            content_type,
            origin,
        )
        .await;
        assert_eq!(
            status, wanted,
            "start with {content_type:?} from {origin:?}"
        );
    }
    let missing = http
        .get(format!("{base}{PREFIX}/instances/csrf-start"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404, "no refused start created it");

    // A running instance survives a cross-site terminate.
    let own_origin = base.clone();
    let started = post(
        &http,
        format!("{base}{PREFIX}/orchestrators/anything/target"),
        json,
        Some(&own_origin),
    )
    .await;
    assert_eq!(started, 202, "a same-origin JSON POST is fine");
    for (content_type, origin) in [
        (Some("text/plain"), evil),
        (Some("text/plain"), None),
        (json, evil),
    ] {
        let status = post(
            &http,
            format!("{base}{PREFIX}/instances/target/terminate"),
            content_type,
            origin,
        )
        .await;
        assert!(status == 403 || status == 415, "terminate got {status}");
    }
    wait_status(&http, &base, "target", "Pending").await;
    let terminated = post(
        &http,
        format!("{base}{PREFIX}/instances/target/terminate"),
        json,
        None,
    )
    .await;
    assert_eq!(terminated, 202);
    wait_status(&http, &base, "target", "Terminated").await;
    handle.stop().await;
}

#[tokio::test]
async fn a_rebinding_host_is_refused() {
    let (handle, base) = serve_plain(|o| o.allowed_hosts = vec!["basalt.internal".into()]).await;
    let port = handle.http_addr().expect("http on").port();
    let http = http_client();
    let started = post(
        &http,
        format!("{base}{PREFIX}/orchestrators/anything/secret"),
        Some("application/json"),
        None,
    )
    .await;
    assert_eq!(started, 202);
    // The attacker's name, re-pointed at 127.0.0.1: the browser sends it as Host.
    for (host, wanted) in [
        (format!("evil.example:{port}"), 403),
        (format!("localhost.evil.example:{port}"), 403),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("basalt.internal:{port}"), 200),
    ] {
        let response = http
            .get(format!("{base}{PREFIX}/instances/secret"))
            .header("host", &host)
            .send()
            .await
            .expect("get");
        let status = response.status().as_u16();
        // 200 or 202: what matters is that the answer was given.
        let served = status == 200 || status == 202;
        assert_eq!(served, wanted == 200, "Host {host}: {status}");
        if wanted == 403 {
            assert_eq!(status, 403, "Host {host}");
            let body = response.text().await.expect("body");
            assert!(!body.contains("\"x\""), "the input leaked: {body}");
        }
    }
    handle.stop().await;
}

#[tokio::test]
async fn returned_uris_escape_ids_and_come_from_configuration() {
    let (handle, base) =
        serve_plain(|o| o.public_url = Some("https://basalt.example.com/api".into())).await;
    let http = http_client();
    let mut purge_uris = Vec::new();
    for escaped in ["victim", "victim%3Fz"] {
        let response = http
            .post(format!("{base}{PREFIX}/orchestrators/anything/{escaped}"))
            .header("content-type", "application/json")
            .header("host", "attacker.example")
            .send()
            .await
            .expect("start");
        assert_eq!(response.status(), 403, "a foreign Host is refused first");
        let response = http
            .post(format!("{base}{PREFIX}/orchestrators/anything/{escaped}"))
            .header("content-type", "application/json")
            .send()
            .await
            .expect("start");
        assert_eq!(response.status(), 202);
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: serde_json::Value = response.json().await.expect("json");
        let purge = body["purgeHistoryDeleteUri"]
            .as_str()
            .expect("uri")
            .to_owned();
        assert_eq!(
            purge,
            format!("https://basalt.example.com/api{PREFIX}/instances/{escaped}")
        );
        assert_eq!(location.as_deref(), Some(purge.as_str()));
        let raise = body["sendEventPostUri"].as_str().expect("uri");
        assert!(
            raise.starts_with(&format!("{purge}/raiseEvent/")),
            "{raise}"
        );
        purge_uris.push(purge);
    }
    for id in ["victim", "victim%3Fz"] {
        let terminated = post(
            &http,
            format!("{base}{PREFIX}/instances/{id}/terminate"),
            Some("application/json"),
            None,
        )
        .await;
        assert_eq!(terminated, 202, "terminate {id}");
        wait_status(&http, &base, id, "Terminated").await;
    }
    // Following the purge URI of `victim?z` purges it, not `victim`.
    let path = purge_uris[1]
        .strip_prefix("https://basalt.example.com/api")
        .expect("configured base");
    let purged = http
        .delete(format!("{base}{path}"))
        .send()
        .await
        .expect("purge");
    assert_eq!(purged.status(), 200);
    let gone = http
        .get(format!("{base}{PREFIX}/instances/victim%3Fz"))
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), 404, "victim?z was purged");
    wait_status(&http, &base, "victim", "Terminated").await;
    handle.stop().await;
}

/// Reads until the server closes the connection; `true` if it did within
/// `limit` (whatever it sent first, e.g. a 408).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut sink = Vec::new();
    matches!(
        tokio::time::timeout(limit, stream.read_to_end(&mut sink)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn slow_and_idle_http_clients_are_dropped_while_others_are_served() {
    use tokio::io::AsyncWriteExt as _;
    let (handle, base) = serve_plain(|o| {
        o.http_limits = HttpLimits {
            connections_max: 3,
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
        }
    })
    .await;
    let addr = handle.http_addr().expect("http on");
    let connect = || tokio::net::TcpStream::connect(addr);

    let mut partial_headers = connect().await.expect("connect");
    partial_headers
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let mut partial_body = connect().await.expect("connect");
    partial_body
        .write_all(
            format!(
                "POST {PREFIX}/orchestrators/slow/slow-body HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n\"x"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut idle = connect().await.expect("connect");

    // All three slots are taken; a fourth client is served once the server
    // drops the slow ones.
    let http = http_client();
    let served = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("served after the slow clients were dropped");
    assert_eq!(served.status(), 200);
    for (what, stream) in [
        ("partial headers", &mut partial_headers),
        ("a partial body", &mut partial_body),
        ("an idle connection", &mut idle),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "the server kept {what} open"
        );
    }
    let missing = http
        .get(format!("{base}{PREFIX}/instances/slow-body"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404, "the unfinished start did nothing");
    handle.stop().await;
}

#[tokio::test]
async fn grpc_is_served_while_http_connections_are_at_their_limit() {
    let (handle, _base) = serve_plain(|o| {
        o.http_limits = HttpLimits {
            connections_max: 4,
            ..HttpLimits::default()
        }
    })
    .await;
    let addr = handle.http_addr().expect("http on");
    let mut hogs = Vec::new();
    for _ in 0..64 {
        hogs.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let mut client = TaskHubSidecarServiceClient::connect(format!("http://{}", handle.grpc_addr()))
        .await
        .expect("gRPC connects");
    client.hello(()).await.expect("gRPC serves");
    drop(hogs);
    handle.stop().await;
}

async fn serve_tls(files: &[std::path::PathBuf; 5], client_certs: bool) -> ServerHandle {
    let tls = TlsFiles {
        cert: files[1].clone(),
        key: files[2].clone(),
        client_ca: client_certs.then(|| files[0].clone()),
    };
    serve_plain(|o| o.tls = Some(tls)).await.0
}

async fn grpc_over_tls(
    handle: &ServerHandle,
    files: &[std::path::PathBuf; 5],
    identity: bool,
) -> Result<(), String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&files[0]).expect("ca")))
        .domain_name("localhost");
    if identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&files[3]).expect("cert"),
            std::fs::read(&files[4]).expect("key"),
        ));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", handle.grpc_addr().port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    TaskHubSidecarServiceClient::new(channel)
        .hello(())
        .await
        .map(|_| ())
        .map_err(|e| format!("hello: {e:?}"))
}

fn https_client(files: &[std::path::PathBuf; 5], identity: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&files[0]).expect("ca")).expect("ca");
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([ca]);
    if identity {
        let mut pem = std::fs::read(&files[3]).expect("cert");
        pem.extend(std::fs::read(&files[4]).expect("key"));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    builder.build().expect("client")
}

#[tokio::test]
async fn both_ports_speak_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = common::certificates(dir.path());
    let handle = serve_tls(&files, false).await;
    grpc_over_tls(&handle, &files, false)
        .await
        .expect("gRPC over TLS");
    let mut plain = TaskHubSidecarServiceClient::connect(format!("http://{}", handle.grpc_addr()))
        .await
        .expect("a TCP connection opens");
    plain.hello(()).await.expect_err("plain gRPC is not served");

    let port = handle.http_addr().expect("http on").port();
    let https = https_client(&files, false);
    let health = https
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("HTTPS");
    assert_eq!(health.status(), 200);
    let started = https
        .post(format!(
            "https://localhost:{port}{PREFIX}/orchestrators/anything/tls-1"
        ))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("HTTPS start");
    assert_eq!(started.status(), 202);
    let body: serde_json::Value = started.json().await.expect("json");
    assert!(
        body["statusQueryGetUri"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{body}"
    );
    http_client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect_err("plain HTTP is not served");
    handle.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_when_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = common::certificates(dir.path());
    let handle = serve_tls(&files, true).await;
    grpc_over_tls(&handle, &files, false)
        .await
        .expect_err("gRPC without a client certificate");
    grpc_over_tls(&handle, &files, true)
        .await
        .expect("gRPC with a client certificate");
    let port = handle.http_addr().expect("http on").port();
    https_client(&files, false)
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect_err("HTTPS without a client certificate");
    let health = https_client(&files, true)
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("HTTPS with a client certificate");
    assert_eq!(health.status(), 200);
    handle.stop().await;
}

#[test]
fn tls_settings_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = common::certificates(dir.path());
    let exposed = ServeFile {
        grpc_addr: Some("0.0.0.0:4001".parse().expect("addr")),
        http_addr: Some("off".into()),
        tls_cert: Some(files[1].clone()),
        tls_key: Some(files[2].clone()),
        ..ServeFile::default()
    };
    exposed
        .clone()
        .into_options()
        .expect("TLS allows a non-loopback address");
    let refused = ServeFile {
        tls_key: None,
        ..exposed.clone()
    }
    .into_options()
    .expect_err("a certificate without a key");
    assert!(refused.to_string().contains("tls-key"), "{refused}");
    let refused = ServeFile {
        tls_cert: None,
        tls_key: None,
        tls_client_ca: Some(files[0].clone()),
        ..ServeFile::default()
    }
    .into_options()
    .expect_err("a client CA without a certificate");
    assert!(refused.to_string().contains("tls-client-ca"), "{refused}");
    // A key file that is not a key is named when the server starts.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let bad = runtime.block_on(server::start(ServeOptions {
        storage: StorageChoice::Memory,
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: None,
        tls: Some(TlsFiles {
            cert: files[1].clone(),
            key: files[0].clone(),
            client_ca: None,
        }),
        ..ServeOptions::default()
    }));
    let Err(error) = bad else {
        panic!("a certificate as the key was accepted");
    };
    assert!(error.to_string().contains("ca.pem"), "{error}");
}

#[test]
fn storage_errors_reach_clients_without_paths() {
    let failure = basalt_runtime::Error::Storage(
        "/var/lib/basalt/p03/log/00000007.seg at offset 4096: No space left on device".into(),
    );
    let status = basalt_server::sidecar::status_of(failure.clone());
    assert_eq!(status.code(), Code::Internal);
    assert!(
        !status.message().contains("/var/lib"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("incident"),
        "{}",
        status.message()
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let body = runtime.block_on(async {
        use axum::response::IntoResponse as _;
        let response = basalt_server::http::ApiError::from(failure).into_response();
        assert_eq!(response.status(), 500);
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body")
    });
    let body = String::from_utf8_lossy(&body);
    assert!(!body.contains("/var/lib"), "{body}");
    assert!(body.contains("incident"), "{body}");
}

#[test]
fn the_hub_is_private_to_the_servers_user() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let server = common::ServerProcess::start(&data, "127.0.0.1:0", "off", &[]);
    let (code, _) = server.terminate();
    assert_eq!(code, Some(0));
    let mut seen = 0;
    let mut pending = vec![data.clone()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path).expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        seen += 1;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                pending.push(entry.expect("entry").path());
            }
        }
    }
    assert!(seen > 3, "the hub has files: {seen}");
}

#[tokio::test]
async fn http_bodies_take_the_documented_payload_size() {
    let (handle, base) = serve_plain(|o| o.payload_bytes_max = 4 << 20).await;
    let http = http_client();
    // A 3 MiB input (axum's own default refused anything past 2 MB).
    let big = serde_json::to_string(&"x".repeat(3 << 20)).expect("json");
    let started = http
        .post(format!("{base}{PREFIX}/orchestrators/anything/big-input"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("post");
    assert_eq!(started.status(), 202);
    let too_big = serde_json::to_string(&"x".repeat(6 << 20)).expect("json");
    let refused = http
        .post(format!("{base}{PREFIX}/orchestrators/anything/too-big"))
        .header("content-type", "application/json")
        .body(too_big)
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 413);
    handle.stop().await;
}

/// `/healthz` says the process serves; `/readyz` says whether every
/// partition does. A storage outage stops the partitions that write: the
/// server is not ready (503, the partitions named, no paths) while the
/// liveness probe stays 200; once storage works again the partitions
/// reopen by themselves, without a restart, `/readyz` is 200 again and
/// `/metrics` counts the stops and reopens.
#[tokio::test]
async fn readiness_follows_the_partitions_through_an_outage_and_liveness_does_not() {
    use basalt_storage::fault::FaultyStore;
    use std::sync::Arc;
    let faulty = Arc::new(FaultyStore::new(Arc::new(
        object_store::memory::InMemory::new(),
    )));
    let storage = basalt_storage::Storage::object_store(faulty.clone(), "memory://faulty");
    let handle = server::start_on(
        ServeOptions {
            storage: StorageChoice::Memory,
            grpc_addr: "127.0.0.1:0".parse().expect("addr"),
            http_addr: Some("127.0.0.1:0".parse().expect("addr")),
            partitions: 2,
            reopen_backoff_max: std::time::Duration::from_millis(200),
            ..ServeOptions::default()
        },
        storage,
    )
    .await
    .expect("server starts");
    let base = format!("http://{}", handle.http_addr().expect("http on"));
    let http = http_client();
    let readyz = || async {
        let answer = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        let status = answer.status().as_u16();
        (
            status,
            answer.json::<serde_json::Value>().await.expect("json"),
        )
    };
    assert_eq!(readyz().await.0, 200);

    // Every write fails from now on: the next start's commit stops its
    // partition.
    faulty.set_outage(true);
    let failed = post(
        &http,
        format!("{base}{PREFIX}/orchestrators/anything/doomed"),
        Some("application/json"),
        None,
    )
    .await;
    assert_eq!(failed, 500, "the start fails with its partition");
    let (status, body) = readyz().await;
    assert_eq!(status, 503);
    let problems = body["problems"].as_array().expect("problems");
    assert!(!problems.is_empty(), "{body}");
    assert!(
        problems.iter().all(|p| p["problem"]
            .as_str()
            .is_some_and(|t| t.contains("storage error") && !t.contains("memory://"))),
        "{body}"
    );
    let live = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(live.status(), 200, "the process still serves");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("basalt_partition_up{partition=\"0\"} 0")
            || metrics.contains("basalt_partition_up{partition=\"1\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("basalt_partition_last_storage_error{"),
        "{metrics}"
    );

    // Storage works again: the partitions come back by themselves.
    faulty.set_outage(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = readyz().await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not ready: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let started = post(
        &http,
        format!("{base}{PREFIX}/orchestrators/anything/after"),
        Some("application/json"),
        None,
    )
    .await;
    assert_eq!(started, 202, "the partition takes work again");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let total = |family: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        total("basalt_partition_storage_failures_total{") >= 1.0,
        "{metrics}"
    );
    assert!(total("basalt_partition_reopens_total{") >= 1.0, "{metrics}");
    assert_eq!(total("basalt_partition_up{"), 2.0, "{metrics}");
    handle.stop().await;
}

/// Sends a request's bytes as they are (the test builds them by hand, so
/// a million actions cost it 11 MB, not their decoded size); decodes the
/// answer with prost.
struct RawCodec;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = proto::CompleteTaskResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<proto::CompleteTaskResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<Vec<u8>, proto::CompleteTaskResponse>::raw_decoder(
            tonic::codec::BufferSettings::default(),
        )
    }
}

/// A process's memory figure from `/proc/PID/status`, in KiB (`VmRSS`
/// now, `VmHWM` the peak).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// One `CompleteOrchestratorTask` with a million `ScheduleTask` actions
/// (11 MB, within the message size limit) took the server from 13 MB to
/// 801 MB before the engine's limit could look at it. Now the request's
/// bytes are counted before they are decoded: it is refused with
/// INVALID_ARGUMENT naming the field, and the server's peak memory stays
/// within 100 MiB of what it used before.
#[tokio::test]
async fn a_million_action_step_is_refused_before_it_is_decoded() {
    use prost::Message;
    let dir = tempfile::tempdir().expect("dir");
    let server = common::ServerProcess::start(&dir.path().join("hub"), "127.0.0.1:0", "off", &[]);
    let channel = Channel::from_shared(format!("http://{}", server.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = TaskHubSidecarServiceClient::new(channel.clone());
    client.hello(()).await.expect("hello");
    let baseline = memory_kib(server.pid(), "VmRSS");

    let action = proto::OrchestratorAction {
        id: 1,
        orchestrator_action_type: Some(
            proto::orchestrator_action::OrchestratorActionType::ScheduleTask(
                proto::ScheduleTaskAction {
                    name: "a".into(),
                    ..proto::ScheduleTaskAction::default()
                },
            ),
        ),
    }
    .encode_to_vec();
    let mut body = proto::OrchestratorResponse {
        instance_id: "victim".into(),
        completion_token: "s:0:0:1:0:0:victim".into(),
        ..proto::OrchestratorResponse::default()
    }
    .encode_to_vec();
    // Repeated field 2 (`actions`), a million times: protobuf merges them.
    for _ in 0..1_000_000 {
        body.push(0x12);
        prost::encoding::encode_varint(action.len() as u64, &mut body);
        body.extend_from_slice(&action);
    }
    assert!(body.len() > 8 << 20, "{} bytes", body.len());

    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.expect("ready");
    let refused = grpc
        .unary(
            tonic::Request::new(body),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/TaskHubSidecarService/CompleteOrchestratorTask",
            ),
            RawCodec,
        )
        .await
        .expect_err("a million actions are refused");
    let peak = memory_kib(server.pid(), "VmHWM");
    assert!(
        peak < baseline + 100 * 1024,
        "peak {peak} KiB against {baseline} KiB before the request"
    );
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("OrchestratorResponse"),
        "{refused:?}"
    );
    client.hello(()).await.expect("the server still serves");
}
