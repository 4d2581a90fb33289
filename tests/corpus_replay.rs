//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets' own
//! checks, on stable, so every `cargo test` re-runs what the fuzzer once found interesting.
//!
//! The checks live in `fuzz/src/lib.rs` and are compiled into this test by path: the fuzz crate is
//! a workspace of its own and cannot be a dependency. A missing or empty corpus fails the test.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::PathBuf;

/// Every file of `fuzz/corpus/<target>/`, sorted, with its name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (p.display().to_string(), bytes)
        })
        .collect();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    for (name, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "{target}: {name} fails its check");
    }
}

#[test]
fn request_scanner_corpus_holds() {
    replay("request_scanner", checks::check_request_scanner);
}

#[test]
fn reply_scanner_corpus_holds() {
    replay("reply_scanner", checks::check_reply_scanner);
}

#[test]
fn differential_corpus_holds() {
    replay("differential", checks::check_differential);
}

#[test]
fn cursor_codec_corpus_holds() {
    replay("cursor_codec", checks::check_cursor_codec);
}

#[test]
fn cert_expiry_corpus_holds() {
    replay("cert_expiry", checks::check_cert_expiry);
}

#[test]
fn openssl_certificates_in_the_corpus_have_their_expiry_read() {
    let expiry = |name: &str| {
        let (_, der) = corpus("cert_expiry")
            .into_iter()
            .find(|(n, _)| n.ends_with(name))
            .unwrap_or_else(|| panic!("{name} in the corpus"));
        respite::tls::not_after(&der)
    };
    let (ca, rsa) = (expiry("ca.der"), expiry("rsa-10y.der"));
    assert!(ca.is_some() && expiry("server.der").is_some() && expiry("client.der").is_some());
    // Made the same day, valid 30 days and 10 years.
    let days = (rsa.unwrap_or(0) - ca.unwrap_or(0)) / 86_400;
    assert!((3615..=3625).contains(&days), "{days} days apart");
    assert_eq!(expiry("truncated.der"), None);
}

#[test]
fn every_chunking_adds_up() {
    for sel in 0..=u8::MAX {
        let sizes = checks::chunk_sizes(sel, 1000);
        assert_eq!(sizes.iter().sum::<usize>(), 1000, "selector {sel}");
        assert!(sizes.iter().all(|&n| n > 0));
    }
}

#[test]
fn whole_and_byte_by_byte_scans_agree_on_a_pipeline() {
    let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*0\r\n";
    let limits = respite::resp::Limits::default();
    let whole = checks::run_requests(input, &[input.len()], &limits, false);
    let bytes = checks::run_requests(input, &checks::chunk_sizes(0, input.len()), &limits, true);
    assert_eq!(whole, bytes);
    assert_eq!((whole.frames.len(), whole.consumed), (3, input.len()));

    let replies = b"+OK\r\n*2\r\n:1\r\n$1\r\na\r\n";
    let whole = checks::run_replies(replies, &[replies.len()], false);
    assert_eq!(whole.frames, vec![5, 15]);
    assert_eq!(whole, checks::run_replies(replies, &[1; 20], true));
}

#[test]
fn leniencies_are_classified() {
    use checks::{classify_reply, reference_leniency, Class};
    assert_eq!(
        classify_reply(b"*2\r\n:1\r\n$1\r\na\r\n"),
        Ok(Class::Common)
    );
    assert_eq!(
        classify_reply(b"|1\r\n+a\r\n+b\r\n:3\r\n"),
        Ok(Class::Common)
    );
    assert_eq!(classify_reply(b":abc\r\n"), Ok(Class::Lenient));
    assert_eq!(classify_reply(b"*1\r\n_\r\n"), Ok(Class::Common));
    assert_eq!(classify_reply(b"~1\r\n$-1\r\n"), Ok(Class::Lenient));
    assert_eq!(classify_reply(b"%1\r\n*0\r\n:1\r\n"), Ok(Class::Lenient));
    assert!(classify_reply(b"*2\r\n:1\r\n").is_err());
    assert!(reference_leniency(b"+a\rb\r\n", &Ok(None)));
    assert!(reference_leniency(b"*1\r\n;0\r\n", &Ok(None)));
    assert!(!reference_leniency(b"*1\r\n,1.5\r\n", &Ok(None)));
}

#[test]
fn resp3_converter_corpus_holds() {
    replay("resp3_converter", checks::check_resp3_converter);
}
