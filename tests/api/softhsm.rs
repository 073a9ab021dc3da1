//! The SoftHSM2 token scripts/test prepares (SOFTHSM2_CONF, label
//! `mayfly-test`), and a PKCS#11 session of the test's own on it, to look at
//! what mayfly put there and to break it.

use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use mayfly::keys::pkcs11::Pkcs11Config;

pub const TOKEN: &str = "mayfly-test";

fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("the pkcs11 tests need {name} (scripts/test prepares a SoftHSM2 token)"))
}

pub fn config() -> Pkcs11Config {
    Pkcs11Config {
        module: PathBuf::from(var("MAYFLY_TEST_PKCS11_MODULE")),
        token: TOKEN.into(),
        pin_file: PathBuf::from(var("MAYFLY_TEST_PKCS11_PIN_FILE")),
    }
}

/// A logged-in session of the test's own (the module is initialised once
/// per process; mayfly's signer may have done it already).
pub fn session() -> Session {
    let c = config();
    let ctx = Pkcs11::new(&c.module).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
        .expect("the mayfly-test token");
    let session = ctx.open_rw_session(slot).unwrap();
    let pin = std::fs::read_to_string(&c.pin_file).unwrap();
    let _ = session.login(UserType::User, Some(&pin.trim().to_string().into()));
    session
}

/// What the token holds under `kid`: whether a private key is there, and
/// whether it is non-extractable, sensitive, and refuses to give out its value.
pub struct Held {
    pub private: bool,
    pub extractable: Option<bool>,
    pub sensitive: Option<bool>,
    pub value_readable: bool,
}

pub fn held(kid: &str) -> Held {
    let s = session();
    let found = s
        .find_objects(&[
            Attribute::Label(kid.as_bytes().to_vec()),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ])
        .unwrap();
    let Some(&key) = found.first() else {
        return Held {
            private: false,
            extractable: None,
            sensitive: None,
            value_readable: false,
        };
    };
    let flags = s
        .get_attributes(key, &[AttributeType::Extractable, AttributeType::Sensitive])
        .unwrap();
    let flag = |want: AttributeType| {
        flags.iter().find_map(|a| match (a, want) {
            (Attribute::Extractable(b), AttributeType::Extractable) => Some(*b),
            (Attribute::Sensitive(b), AttributeType::Sensitive) => Some(*b),
            _ => None,
        })
    };
    let value = s.get_attribute_info(key, &[AttributeType::Value]).unwrap();
    Held {
        private: true,
        extractable: flag(AttributeType::Extractable),
        sensitive: flag(AttributeType::Sensitive),
        value_readable: matches!(value[0], AttributeInfo::Available(_)),
    }
}

/// Destroys every object labelled `kid` behind mayfly's back.
pub fn destroy(kid: &str) {
    let s = session();
    for o in s.find_objects(&[Attribute::Label(kid.as_bytes().to_vec())]).unwrap() {
        s.destroy_object(o).unwrap();
    }
}
