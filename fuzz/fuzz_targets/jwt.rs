//! JWT parsing: `Authorization` header → `bearer` → header/payload decoding
//! (`auth::token_parts`), then the whole `Authenticator::authenticate` with an HMAC
//! verifier (the signature check and claim validation that follow).
#![no_main]

use std::sync::OnceLock;

use fraiseql::auth::{AuthConfig, Authenticator, Door, JwtConfig};
use libfuzzer_sys::fuzz_target;

mod common;

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fraiseql-fuzz-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret = dir.join("secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef-secret\n").expect("secret");
        let config = AuthConfig {
            jwt: vec![JwtConfig {
                algorithms: vec!["HS256".into(), "HS384".into()],
                secret_file: Some(secret),
                ..Default::default()
            }],
            ..Default::default()
        };
        common::runtime()
            .block_on(Authenticator::new(&config))
            .expect("authenticator")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(token) = fraiseql::auth::bearer(header) {
        let _ = fraiseql::auth::token_parts(token);
    }
    let _ = fraiseql::auth::token_parts(header);
    let auth = authenticator();
    let _ = common::runtime().block_on(auth.authenticate(Some(header), Door::Http));
});
