//! Any bytes through the document parser and validator, as `rtctl apply -f` reads a file and
//! the controller reads a value back from etcd. No input may panic, every refusal must be an
//! `invalid_request`, and every accepted document must survive the round trip through its
//! stored form: `to_yaml` parses back to an equal document (and prints the same again), and
//! so does its JSON form (JSON is read as YAML).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rtm_core::ErrorCode;
use rtm_core::model::{
    GameRuntime, MAX_DOCUMENT_BYTES, ParseError, parse_document, parse_documents, to_yaml, validate,
};

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(text) => check(parse_documents(text)),
        Err(_) => {
            // The controller's path refuses bytes that are not UTF-8 before parsing...
            check(parse_document(data).map(|doc| vec![doc]));
            // ...and rtctl's refuses the file; replace the bad bytes so the parser still sees
            // the rest.
            check(parse_documents(&String::from_utf8_lossy(data)));
        }
    }
});

fn check(result: Result<Vec<GameRuntime>, ParseError>) {
    match result {
        Ok(docs) => docs.iter().for_each(round_trip),
        Err(error) => {
            assert_eq!(error.code(), ErrorCode::InvalidRequest, "{error:?}");
            // The messages users see are built without panicking.
            let _ = error.to_string();
            let _ = error.document();
        }
    }
}

fn round_trip(doc: &GameRuntime) {
    assert_eq!(
        validate(doc),
        Ok(()),
        "an accepted document is valid: {doc:?}"
    );

    let yaml = to_yaml(doc);
    let back = parse_document(yaml.as_bytes())
        .unwrap_or_else(|e| panic!("the stored form does not parse back: {e}\n{yaml}"));
    assert_eq!(
        &back, doc,
        "the stored form parses back to another document:\n{yaml}"
    );
    assert_eq!(to_yaml(&back), yaml, "printing is not stable");

    let json = serde_json::to_string(doc).expect("a document serializes to JSON");
    if json.len() > MAX_DOCUMENT_BYTES {
        // JSON escapes more than YAML (`\u0001` for `\x01`): this form may not fit where the
        // stored one does, and it is not what is stored.
        return;
    }
    let back = parse_document(json.as_bytes())
        .unwrap_or_else(|e| panic!("the JSON form does not parse back: {e}\n{json}"));
    assert_eq!(
        &back, doc,
        "the JSON form parses back to another document:\n{json}"
    );
}
