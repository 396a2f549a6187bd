module sluice.example/order-totals

go 1.24
