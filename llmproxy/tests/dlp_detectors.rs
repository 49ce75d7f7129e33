//! Positive and negative tables per detector, checksum vectors, policy switches and modes.

mod common;

use common::{ALNUM, B64URL, Gen, UPPER_NUM, found, jwt};
use llmproxy::dlp::{DetectorKind as K, Engine, iban_valid, luhn_valid, scan_text};

/// Each positive must be found whole, as the only match, in a sentence around it.
fn assert_found(engine: &Engine, kind: K, secret: &str) {
    for text in [secret.to_string(), format!("see {secret} here."), format!("key=\"{secret}\"\n")] {
        let got = found(engine, &text);
        assert_eq!(got, vec![(kind, secret.to_string())], "in {text:?}");
    }
}

fn assert_clean(engine: &Engine, text: &str) {
    let got = found(engine, text);
    assert!(got.is_empty(), "false positive in {text:?}: {got:?}");
    assert_eq!(found(engine, &format!("note: {text}; end")), vec![], "in context: {text:?}");
}

fn check(kind: K, positives: &[String], negatives: &[String]) {
    let e = Engine::builtin();
    assert!(positives.len() >= 10 && negatives.len() >= 10, "{kind:?}: tables too small");
    for p in positives {
        assert_found(&e, kind, p);
    }
    for n in negatives {
        assert_clean(&e, n);
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn email() {
    let pos = strs(&[
        "alice@example.com",
        "first.last+tag@sub.example.co.uk",
        "a_b%c@x-y.io",
        "UPPER@EXAMPLE.COM",
        "dave123@mail.example.travel",
        "x@y.museum",
        "o'neil@example.org",
        "name@domain.info",
        "r2d2@droids.example",
        "very.common@example.com",
    ]);
    // `o'neil`: the apostrophe is outside our local-part charset, so only `neil@…` is seen.
    let pos: Vec<String> = pos.into_iter().map(|p| p.replace("o'neil", "neil")).collect();
    let neg = strs(&[
        "@mention",
        "user@localhost",
        "icon@2x.png",
        "foo@bar",
        "a@b.c",
        "npm i @types/node",
        "pkg@1.2.3",
        ".start@example.com",
        "foo..bar@example.com",
        "name@-bad",
        "@Override public void run()",
    ]);
    check(K::Email, &pos, &neg);
}

#[test]
fn phone() {
    let pos = strs(&[
        "+14155552671",
        "+1 415 555 2671",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "+44 20 7946 0958",
        "+49 30 12345678",
        "020 7946 0958",
        "01 23 45 67 89",
        "+33 1 23 45 67 89",
        "1-800-555-0199",
        "+81-3-1234-5678",
    ]);
    let neg = strs(&[
        "1700000000",
        "4155552671",
        "123-456-7890",
        "555-123-4567",
        "2024-01-15",
        "10.0.0.1",
        "192.168.100.200",
        "version 1.2.3",
        "ORD-2024-555-0199",
        "order #20240115-0042",
        "12:30:45",
        "3.14159265358979",
        "v415.555.2671",
        "1700000000123",
    ]);
    check(K::Phone, &pos, &neg);
}

#[test]
fn credit_card() {
    let pos = strs(&[
        "4111111111111111",
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "2223003122003222",
        "378282246310005",
        "3782 822463 10005",
        "6011111111111117",
        "3530111333300000",
        "6200000000000005",
        "30569309025904",
        "36227206271667",
        "4012888888881881",
        "4222222222222",
    ]);
    let neg = strs(&[
        "4111111111111112",
        "1234567812345678",
        "1700000000000",
        "0000000000000000",
        "9999999999999999",
        "4111-1111 1111-1111",
        "41111111 11111111",
        "978-3-16-148410-0",
        "4111 1111 1111 111",
        "id4111111111111111",
        "1.4111111111111111",
        "550e8400-e29b-41d4-a716-446655440000",
    ]);
    check(K::CreditCard, &pos, &neg);
}

#[test]
fn ssn() {
    let pos = strs(&[
        "123-45-6789",
        "234-56-7890",
        "001-01-0001",
        "899-99-9999",
        "536 22 1234",
        "078-05-1121",
        "665-12-3456",
        "772-10-0001",
        "400-01-2000",
        "219-09-9998",
    ]);
    let neg = strs(&[
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-4567",
        "123-45-0000",
        "078-05-1120",
        "219-09-9999",
        "123456789",
        "12-345-6789",
        "123-45-67890",
        "2024-01-15",
        "1234-56-7890",
    ]);
    check(K::Ssn, &pos, &neg);
}

#[test]
fn iban() {
    let pos = strs(&[
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "BE68539007547034",
        "CH9300762011623852957",
        "ES9121000418450200051332",
        "IT60X0542811101000000123456",
        "NO9386011117947",
        "AT611904300234573201",
    ]);
    let neg = strs(&[
        "GB82WEST12345698765433",
        "DE89370400440532013001",
        "XX82WEST12345698765432",
        "GB82WEST1234569876543",
        "GB82 WES T123 4569 8765 432",
        "NL91ABNA04171643001",
        "ABCD1234567890123456",
        "US12345678901234567890",
        "SHA1 DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
        "RFC 2616 SECTION 14",
    ]);
    check(K::Iban, &pos, &neg);
}

#[test]
fn checksum_vectors() {
    for ok in ["79927398713", "4111111111111111", "378282246310005", "0", "4111 1111 1111 1111"] {
        assert!(luhn_valid(ok), "{ok}");
    }
    for bad in ["79927398710", "4111111111111112", "", "12a4", "1234567812345678"] {
        assert!(!luhn_valid(bad), "{bad}");
    }
    for ok in [
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "SA0380000000608010167519",
        "MT84MALT011000012345MTLCAST001S",
    ] {
        assert!(iban_valid(ok), "{ok}");
    }
    for bad in ["GB82WEST12345698765431", "GB82WEST1234569876543", "QQ82WEST12345698765432", "GB", ""] {
        assert!(!iban_valid(bad), "{bad}");
    }
}

/// Ten generated tokens per vendor detector, plus fixed shapes that must not match.
#[test]
fn vendor_tokens() {
    let mut g = Gen::new(7);
    let mut cases: Vec<(K, String)> = Vec::new();
    for i in 0..10 {
        let p = ["AKIA", "ASIA"][i % 2];
        cases.push((K::AwsAccessKey, format!("{p}{}", g.from(UPPER_NUM, 16))));
        let p = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"][i % 5];
        cases.push((K::GithubToken, format!("{p}{}", g.from(ALNUM, 36))));
        if i % 3 == 0 {
            cases.push((K::GithubToken, format!("github_pat_{}_{}", g.from(ALNUM, 22), g.from(ALNUM, 59))));
        }
        cases.push((K::GitlabToken, format!("glpat-{}", g.from(B64URL, 20 + i))));
        let p = ["xoxb", "xoxp", "xoxa", "xoxr", "xoxs"][i % 5];
        cases.push((K::SlackToken, format!("{p}-{}-{}-{}", 1000 + i * 37, 2_000_000 + i, g.from(ALNUM, 24))));
        cases.push((
            K::SlackWebhook,
            format!(
                "https://hooks.slack.com/services/T{}/B{}/{}",
                g.from(UPPER_NUM, 8),
                g.from(UPPER_NUM, 8),
                g.from(ALNUM, 24)
            ),
        ));
        let p = ["sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_", "pk_test_"][i % 6];
        cases.push((K::StripeKey, format!("{p}{}", g.from(ALNUM, 24 + i * 7))));
        cases.push((K::OpenaiKey, format!("sk-{}", g.from(ALNUM, 48))));
        let p = ["proj", "svcacct", "admin"][i % 3];
        cases.push((K::OpenaiKey, format!("sk-{p}-{}", g.from(B64URL, 100 + i))));
        cases.push((K::AnthropicKey, format!("sk-ant-api03-{}AA", g.from(B64URL, 93))));
        cases.push((K::GoogleApiKey, format!("AIza{}", g.from(B64URL, 35))));
    }
    let e = Engine::builtin();
    for (kind, token) in &cases {
        assert_found(&e, *kind, token);
    }
    let neg = vec![
        "taskSchedulerImplementationFactory".to_string(),
        "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_string(),
        "sk-proj-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_string(),
        format!("ghp_{}", g.from(ALNUM, 35)),
        format!("ghp_{}", g.from(ALNUM, 37)),
        format!("xghp_{}", g.from(ALNUM, 36)),
        format!("AKIA{}", g.from(UPPER_NUM, 15)),
        format!("XAKIA{}", g.from(UPPER_NUM, 16)),
        format!("AKIA{}", g.from(UPPER_NUM, 17)),
        format!("AIza{}", g.from(B64URL, 34)),
        "sk_live_short".to_string(),
        "glpat-tooShort1".to_string(),
        "xoxb-notatoken".to_string(),
        "the task-runner ask-me disk-usage".to_string(),
        "da39a3ee5e6b4b0d3255bfef95601890afd80709".to_string(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_string(),
        "550e8400-e29b-41d4-a716-446655440000".to_string(),
        format!("{}AKIA{}{}", g.from(ALNUM, 40), g.from(UPPER_NUM, 16), g.from(ALNUM, 40)),
        "https://hooks.slack.com/".to_string(),
        "getApiKeyFromSecretManagerTokenProvider".to_string(),
    ];
    for n in &neg {
        assert_clean(&e, n);
    }
}

#[test]
fn aws_secret_needs_context() {
    let e = Engine::builtin();
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for ctx in [
        "aws_secret_access_key = ",
        "AWS_SECRET_ACCESS_KEY=",
        "\"SecretAccessKey\": \"",
        "export AWS_SECRET_ACCESS_KEY='",
        "aws secret: ",
    ] {
        let text = format!("{ctx}{secret}\n");
        assert!(found(&e, &text).contains(&(K::AwsSecretKey, secret.to_string())), "{text:?}");
    }
    for text in [
        secret.to_string(),
        format!("token: {secret}"),
        format!("aws_secret_access_key = {}", &secret[..39]),
        format!("aws_secret_access_key = {secret}A"),
        "aws_secret_access_key = da39a3ee5e6b4b0d3255bfef95601890afd80709".to_string(),
    ] {
        assert!(!found(&e, &text).iter().any(|(k, _)| *k == K::AwsSecretKey), "{text:?}");
    }
}

#[test]
fn jwt_tokens() {
    let mut g = Gen::new(11);
    let mut pos = vec![
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c".to_string(),
    ];
    for alg in ["HS256", "RS256", "ES256", "PS512", "EdDSA", "none", "HS512", "RS384", "ES384"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        let sig = if alg == "none" { String::new() } else { g.from(B64URL, 43) };
        pos.push(jwt(&header, r#"{"sub":"u1","exp":1700000000}"#, &sig));
    }
    let neg = vec![
        jwt(r#"{"typ":"JWT"}"#, r#"{"sub":"u1"}"#, "abcdefghij"),
        jwt(r#"{"alg":5}"#, r#"{"sub":"u1"}"#, "abcdefghij"),
        jwt("not json", r#"{"sub":"u1"}"#, "abcdefghij"),
        format!("{}.{}", common::b64url(br#"{"alg":"HS256"}"#), common::b64url(b"{}")),
        "eyJ.eyJ.abc".to_string(),
        "eyJhbGciOiJIUzI1NiJ9".to_string(),
        format!("{}.part4.part5", jwt(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#, "xx", "yyyy")),
        "eyJzomething.else.entirely".to_string(),
        format!("x{}", jwt(r#"{"alg":"HS256"}"#, "{}", "sig")),
        "file.eyJson.backup".to_string(),
    ];
    check(K::Jwt, &pos, &neg);
}

#[test]
fn private_keys() {
    let mut g = Gen::new(3);
    let mut pos = Vec::new();
    for label in ["", "RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED ", "PGP "] {
        let block = if label == "PGP " { " BLOCK" } else { "" };
        let body: Vec<String> = (0..4)
            .map(|_| g.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 64))
            .collect();
        pos.push(format!(
            "-----BEGIN {label}PRIVATE KEY{block}-----\n{}\n-----END {label}PRIVATE KEY{block}-----",
            body.join("\n")
        ));
    }
    pos.push("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123456789ABCDEF\n\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----".to_string());
    // Truncated: no END line; the header and body still go.
    pos.push("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC".to_string());
    pos.push("-----BEGIN EC PRIVATE KEY-----\r\nMHcCAQEEIBkg\r\n-----END EC PRIVATE KEY-----".to_string());
    let neg = strs(&[
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOC\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n-----END CERTIFICATE-----",
        "-----BEGIN CERTIFICATE REQUEST-----",
        "-----BEGIN OPENSSH PUBLIC KEY-----",
        "BEGIN PRIVATE KEY",
        "-----BEGIN PRIVATE KEY",
        "----- BEGIN PRIVATE KEY -----",
        "the private key is in the vault",
        "-----BEGIN PGP SIGNATURE-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    ]);
    check(K::PrivateKey, &pos, &neg);
}

#[test]
fn url_credentials() {
    let e = Engine::builtin();
    let pos = [
        ("postgres://app:s3cr3t@db.internal:5432/app", "s3cr3t"),
        ("postgresql://user:p%40ss@localhost/db", "p%40ss"),
        ("mysql://root:hunter2@127.0.0.1:3306", "hunter2"),
        ("redis://:authpass@cache:6379/0", "authpass"),
        ("mongodb+srv://admin:Zx9!q@cluster0.example.net/test", "Zx9!q"),
        ("https://bob:pa55word@git.example.com/repo.git", "pa55word"),
        ("amqp://guest:guestpw@rabbit/vhost", "guestpw"),
        ("ftp://anon:mail@ftp.example.org", "mail"),
        ("smtp://mailer:Tr0ub4dor&3@smtp.example.com:587", "Tr0ub4dor&3"),
        ("DATABASE_URL=postgres://svc:xyzzy@10.0.0.5/svc", "xyzzy"),
    ];
    for (text, pass) in pos {
        let got = found(&e, text);
        assert_eq!(got, vec![(K::UrlCredentials, pass.to_string())], "{text}");
        let red = scan_text(text, &e).body;
        assert!(red.contains(":[REDACTED:url_credentials]@"), "{red}");
    }
    for neg in [
        "postgres://user@host/db",
        "https://example.com/path?q=a:b@c",
        "postgres://app:${DB_PASSWORD}@db/app",
        "postgres://app:$PASS@db/app",
        "postgres://app:<password>@db/app",
        "postgres://app:****@db/app",
        "http://localhost:8080/api",
        "see https://example.com:443/x",
        "mailto:someone",
        "postgres://app:{{ password }}@db",
        "postgres://app:[REDACTED:url_credentials]@db",
    ] {
        assert!(!found(&e, neg).iter().any(|(k, _)| *k == K::UrlCredentials), "{neg}");
    }
}

/// Mixed false-positive corpus: none of it may match any detector.
#[test]
fn negative_corpus() {
    let e = Engine::builtin();
    let mut g = Gen::new(99);
    let blob: String = g.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 4000);
    let corpus = [
        "created_at: 1700000000, updated_at: 1700000123456, nanos 1700000000123456789",
        "request id 550e8400-e29b-41d4-a716-446655440000 and 6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "commit da39a3ee5e6b4b0d3255bfef95601890afd80709 (HEAD -> main)",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        blob.as_str(),
        "card-like 4111111111111112 and 1234 5678 9012 3456",
        "v1.2.3, 10.0.0.1, 2024-01-15T12:30:45Z, 3.14159265358979",
        "order numbers ORD-2024-0042-17, #20240115-0042, 123-456-7890",
        "class taskSchedulerImplementationFactory extends AbstractSecretTokenProviderBean",
        "let api_key_name = get_secret_token_for(user_identifier_string);",
        "port 5432, pid 31337, uid 1000, 0x7ffd5fbff8a0",
        "ISBN 978-3-16-148410-0, ISSN 0317-8471",
        "(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)",
        "matrix [[0.123, 0.456], [0.789, 0.012]] loss=0.0001234",
        "image/png;base64 icon@2x.png @types/node npm@10.2.4",
    ];
    for text in corpus {
        assert_eq!(found(&e, text), vec![], "{text}");
    }
}

#[test]
fn a_number_joined_to_a_glued_one_is_still_found() {
    let e = Engine::builtin();
    for text in
        ["4111 1111 1111 1111 4111 1111 1111 1111ghp_", "4111 1111 1111 1111--4111 1111 1111 1111ghp_"]
    {
        assert_eq!(found(&e, text), vec![(K::CreditCard, "4111 1111 1111 1111".to_string())], "{text}");
        assert_eq!(e.find(text), e.find_naive(text), "{text}");
    }
}

#[test]
fn placeholders_that_form_a_url_password_are_redacted_in_one_pass() {
    let e = Engine::builtin();
    for text in ["a://:AKIA-----BEGIN PRIVATE KEY-----@eyJ", "sk-://::-----BEGIN PRIVATE KEY-----@eyJ"] {
        let once = scan_text(text, &e).body.into_owned();
        assert!(once.contains("[REDACTED:url_credentials]@eyJ"), "{once}");
        let twice = scan_text(&once, &e);
        assert!(twice.findings.is_empty() && twice.body == once, "not a fixpoint: {once} -> {}", twice.body);
    }
}
