module sluice.example/order-totals

go 1.24

require sluice.dev/sdk v0.1.0

// The Go SDK: `sluice plugin build` writes it under target/.
replace sluice.dev/sdk => ./target/sluice-sdk-go
