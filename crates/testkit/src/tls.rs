//! Certificates made at test time with the `openssl` CLI, in a directory of the test's own: a
//! CA, a server certificate for 127.0.0.1 (IP SAN, and `localhost`), a client certificate, and
//! a second CA that signed none of them (the "wrong CA" of the negative tests).
//!
//! Keys are EC P-256 in PKCS#8 PEM, which both etcd (Go) and rustls (etcd-client's TLS) read.
//! Certificates are valid for two days: a test never needs more, and a leaked one is useless
//! soon.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::docker::run_bounded;

/// The common name of the client certificate. Deliberately not an etcd user: with
/// `--client-cert-auth`, etcd 3.4 authorizes a request that carries no auth token as the
/// user named by the certificate's CN, so a CN that is a user would be a password-free login
/// for whoever holds the certificate. With this CN only the password authenticates.
const CLIENT_CN: &str = "rtm-test-client";

/// The files, all PEM, in the directory given to [`Certificates::generate`].
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// etcd's certificate, for 127.0.0.1 and `localhost`.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// The client certificate (CN `rtm-test-client`, no etcd user).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here: a client trusting only it must refuse etcd.
    pub other_ca: PathBuf,
}

impl Certificates {
    /// Makes every certificate under `dir`; fails the test, with openssl's message, if openssl
    /// cannot.
    pub fn generate(dir: &Path) -> Certificates {
        let path = |name: &str| dir.join(name);
        let certs = Certificates {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server-key.pem"),
            client_cert: path("client.pem"),
            client_key: path("client-key.pem"),
            other_ca: path("other-ca.pem"),
        };
        self_signed_ca(dir, "ca", "rtm-test-ca");
        self_signed_ca(dir, "other-ca", "rtm-test-other-ca");
        // clientAuth too: etcd's gRPC gateway dials etcd itself with the server certificate.
        signed(
            dir,
            "server",
            "rtm-test-etcd",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        signed(dir, "client", CLIENT_CN, "extendedKeyUsage=clientAuth\n");
        certs
    }
}

fn self_signed_ca(dir: &Path, name: &str, cn: &str) {
    new_key(
        dir,
        name,
        cn,
        Some(&format!("{name}.pem")),
        &[
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A new EC P-256 key `<name>-key.pem` with the subject `cn`: self-signed into `certificate`
/// when given (with `extra` options), else a signing request `<name>.csr`.
fn new_key(dir: &Path, name: &str, cn: &str, certificate: Option<&str>, extra: &[&str]) {
    let key = format!("{name}-key.pem");
    let request = format!("{name}.csr");
    let subject = format!("/CN={cn}");
    let mut args = vec!["req"];
    if certificate.is_some() {
        args.push("-x509");
    }
    args.extend([
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        certificate.unwrap_or(&request),
        "-subj",
        &subject,
    ]);
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// A key and a certificate signed by `ca.pem`, with the extensions in `extensions` (lines of
/// an openssl extension file).
fn signed(dir: &Path, name: &str, cn: &str, extensions: &str) {
    let ext_file = dir.join(format!("{name}.ext"));
    let text = format!(
        "{extensions}keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
    );
    std::fs::write(&ext_file, text).expect("write an openssl extension file");
    new_key(dir, name, cn, None, &[]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut command = Command::new("openssl");
    command.args(args).current_dir(dir);
    let output = run_bounded(command, Duration::from_secs(30)).unwrap_or_else(|| {
        panic!("openssl {args:?} did not run or finish in 30 s: is openssl installed (scripts/services installs it)?")
    });
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
