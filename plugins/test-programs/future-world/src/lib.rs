//! A component built against a future, incompatible version of the contract
//! (`sluice:plugin@0.2.0`): the engine must refuse it at deploy, naming the version.

wit_bindgen::generate!({
    inline: r#"
        package sluice:plugin@0.2.0;

        interface log {
            write: func(message: string);
        }

        world consumer {
            import log;
            export init: func(config: list<tuple<string, string>>) -> result<_, string>;
            export process: func(records: list<u8>) -> result<_, string>;
        }
    "#,
});

struct Future;

impl Guest for Future {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        sluice::plugin::log::write("starting");
        Ok(())
    }

    fn process(_records: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

export!(Future);
