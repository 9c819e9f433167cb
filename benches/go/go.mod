module lameduck/benches/go

go 1.19
