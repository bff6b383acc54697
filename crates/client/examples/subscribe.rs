//! Subscribe to a channel and print what arrives, reconnecting and
//! recovering on the way.
//!
//! ```sh
//! herald serve                      # prints a user token for the dev app
//! cargo run -p herald-client --example subscribe -- ws://127.0.0.1:8080/v1/ws <user token> news
//! ```

use herald_client::{ClientConfig, Event, SubscribeOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: subscribe <ws url> <user token> [channel]");
        std::process::exit(2);
    };
    let channel = args.next().unwrap_or_else(|| "news".into());
    let (client, mut events) = herald_client::connect(ClientConfig::new([url], token)).await?;
    let reply = client
        .subscribe(&channel, SubscribeOptions::global())
        .await?;
    println!("subscribed to {channel} at {:?}", reply.position);
    while let Some(event) = events.recv().await {
        match event {
            Event::Publication(p) => println!("#{} {} {}", p.meta.offset, p.event, p.payload),
            Event::Resubscribed {
                recovered: false,
                channel,
                ..
            } => {
                println!("{channel}: missed publications that cannot be replayed; refetch state")
            }
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
