// The reference: Go's net/http with Server.Shutdown, for benches/run.sh.
//
//	server ADDR
//
// Serves the socket start_server passes (SERVER_STARTER_PORT) when there is one. Prints
// "listening on ADDR" once it accepts. GET / answers "hello"; GET /sleep?ms=N sleeps N ms
// first. SIGTERM: Server.Shutdown (closes idle connections, polls the rest with backoff up
// to 500 ms), then "drained at NS" (wall clock, Unix ns) and exit. SIGUSR1 prints
// "heap BYTES" (live heap after a GC).
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func listener(addr string) net.Listener {
	if spec := os.Getenv("SERVER_STARTER_PORT"); spec != "" {
		entry := strings.Split(spec, ";")[0]
		fd, err := strconv.Atoi(entry[strings.LastIndex(entry, "=")+1:])
		if err != nil {
			panic(err)
		}
		l, err := net.FileListener(os.NewFile(uintptr(fd), "inherited"))
		if err != nil {
			panic(err)
		}
		return l
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	return l
}

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sleep" {
			ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
			if err != nil {
				ms = 100
			}
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		w.Write([]byte("hello\n"))
	})
	srv := &http.Server{Handler: mux}
	l := listener(os.Args[1])
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGUSR1)
	fmt.Printf("listening on %s\n", l.Addr())
	go srv.Serve(l)
	for s := range signals {
		if s == syscall.SIGUSR1 {
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			fmt.Printf("heap %d\n", m.HeapAlloc+m.StackInuse)
			continue
		}
		srv.Shutdown(context.Background())
		fmt.Printf("drained at %d\n", time.Now().UnixNano())
		return
	}
}
