//! Interop with Volo (crate `volo-thrift` from crates.io, Kitex-compatible), over TTHeader
//! and Framed: a Volo client calls every method of our server, and our generated clients
//! call every method of a Volo server. The peer is `interop/volo-peer`, built here with
//! cargo (the first build takes a few minutes). Under `CI` a failure to build it fails the
//! test; elsewhere the test says why it skipped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use examples::gen::{echo, interop};
use netpoll_rpc::client::{ClientBuilder, ClientTransport};
use netpoll_rpc::CallError;

mod common;
use common::free_addrs;
use common::peers::{volo_peer, wait_listening, Peer};

#[test]
fn volo_clients_call_our_server_and_our_clients_call_volo_servers() {
    let Some(peer) = volo_peer() else { return };
    let server = examples::echo_service::builder()
        .addr("127.0.0.1:0")
        .cores(1)
        .start()
        .unwrap();
    let ours = server.local_addr().to_string();

    for transport in ["ttheader", "framed"] {
        // A Volo client against our server (echo and interop on the same port).
        let out = Command::new(&peer)
            .args([
                "call",
                "--transport",
                transport,
                "--echo",
                &ours,
                "--interop",
                &ours,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "Volo client over {transport} against our server:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // Our clients against a Volo server.
        let [echo_addr, interop_addr] = free_addrs();
        let _volo = Peer(
            Command::new(&peer)
                .args(["serve", "--transport", transport])
                .args([
                    "--echo",
                    &echo_addr.to_string(),
                    "--interop",
                    &interop_addr.to_string(),
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_listening(echo_addr);
        wait_listening(interop_addr);
        let t = if transport == "framed" {
            ClientTransport::Framed
        } else {
            ClientTransport::TTHeader
        };
        let e = echo::EchoClient::from_builder(ClientBuilder::new(echo_addr).transport(t)).unwrap();
        assert_eq!(
            &e.echo(Bytes::from_static(b"to volo")).unwrap()[..],
            b"to volo"
        );
        let c = interop::InteropClient::from_builder(ClientBuilder::new(interop_addr).transport(t))
            .unwrap();
        let v = interop::AllTypes {
            b: true,
            str: "volo".into(),
            ints: vec![1, 2, 3],
            counts: [("k".into(), 9)].into_iter().collect(),
            color: interop::Color::BLUE,
            maybe: Some("m".into()),
            ..Default::default()
        };
        assert_eq!(c.roundtrip(v.clone()).unwrap(), v, "{transport}");
        assert_eq!(c.fail_with(0, "ok".into()).unwrap(), 0);
        match c.fail_with(7, "boom".into()) {
            Err(CallError::Declared(interop::InteropFailWithError::Err(e))) => {
                assert_eq!((e.code, &*e.message), (7, "boom"))
            }
            other => panic!("{transport}: expected InteropError, got {other:?}"),
        }
        assert_eq!(
            &c.delayed_echo(Bytes::from_static(b"d"), 10).unwrap()[..],
            b"d"
        );
        c.ping().unwrap();
        let before = c.fired_total().unwrap();
        c.fire(4);
        let t0 = Instant::now();
        while c.fired_total().unwrap() != before + 4 {
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "{transport}: fire was lost"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
