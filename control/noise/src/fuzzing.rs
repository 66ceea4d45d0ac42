//! Invariants for fuzzing and corpus replay (not part of the API): whatever bytes arrive,
//! parsing returns an error or a value, never panics, and never accepts what it must not.

use weft_keys::PrivateKey;

use crate::{accept, ClientHandshake, RecordReader};

/// The server key the fuzz inputs are checked against.
pub fn server_key() -> PrivateKey {
    PrivateKey::from_bytes([7; 32])
}

/// Feeds `data` to the server as an initiation, to a client as a response, and — split at its
/// first byte's value — to a record reader of an established transport.
pub fn check(data: &[u8]) -> Result<(), String> {
    let server = server_key();
    let eph = PrivateKey::from_bytes([9; 32]);
    if let Ok(acc) = accept(&server, data, &eph) {
        // Only a genuine initiation authenticates; random bytes must not.
        if acc.machine.as_bytes() == &[0u8; 32] {
            return Err("accepted a zero machine key".into());
        }
    }
    let machine = PrivateKey::from_bytes([3; 32]);
    let (client, init) = ClientHandshake::start(&machine, &server.public_key(), 130, &eph)
        .map_err(|e| format!("start: {e}"))?;
    let _ = ClientHandshake::start(&machine, &server.public_key(), 130, &eph)
        .map_err(|e| format!("start: {e}"))?
        .0
        .finish(data);
    let acc = accept(&server, &init, &PrivateKey::from_bytes([11; 32]))
        .map_err(|e| format!("accept of a genuine initiation: {e}"))?;
    let mut transport = client
        .finish(&acc.response)
        .map_err(|e| format!("finish of a genuine response: {e}"))?;
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (a, b) = data.split_at(split);
    let mut reader = RecordReader::new();
    for piece in [a, b] {
        reader.push(piece);
        // A forged record never authenticates, so one call decides.
        if let Ok(Some(_)) = reader.next(&mut transport) {
            return Err("forged record authenticated".into());
        }
    }
    Ok(())
}
