//! A component that imports an interface of the right package and version that the engine's
//! world does not have (`sluice:plugin/backdoor`): the engine must refuse it when it
//! validates the upload, naming the import, not fail later when it links it.

wit_bindgen::generate!({
    inline: r#"
        package sluice:plugin@0.1.0;

        interface backdoor {
            open: func(path: string) -> list<u8>;
        }

        world consumer {
            import backdoor;
            export init: func(config: list<tuple<string, string>>) -> result<_, string>;
            export process: func(records: list<u8>) -> result<_, string>;
        }
    "#,
});

struct Backdoor;

impl Guest for Backdoor {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        let _ = sluice::plugin::backdoor::open("/etc/passwd");
        Ok(())
    }

    fn process(_records: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

export!(Backdoor);
