// Command vcsim runs govmomi's vSphere API simulator (a vCenter inventory with the
// vSphere Automation REST API of its vapi/simulator package) for the tests.
//
// Debian's golang-github-vmware-govmomi-dev ships the simulator packages but not
// upstream's vcsim command, so scripts/setup.sh builds this small main from them.
// Once it listens it prints VCSIM_URL=<sdk url> and one VCSIM_DATASTORE=<id> line per
// datastore (the id a content library's storage backing names), then serves until
// SIGINT/SIGTERM.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // registers the /rest endpoints
)

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "address to listen on (host:port)")
	useTLS := flag.Bool("tls", true, "serve HTTPS")
	certFile := flag.String("tlscert", "", "PEM certificate (default: Go's built-in localhost certificate)")
	keyFile := flag.String("tlskey", "", "PEM private key of -tlscert")
	flag.Parse()

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: %v", err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen}
	model.Service.RegisterEndpoints = true
	if *useTLS {
		model.Service.TLS = new(tls.Config)
		if *certFile != "" {
			cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				log.Fatalf("vcsim: -tlscert/-tlskey: %v", err)
			}
			model.Service.TLS.Certificates = []tls.Certificate{cert}
		}
	}
	server := model.Service.NewServer()
	defer server.Close()

	fmt.Printf("VCSIM_URL=%s\n", server.URL)
	for _, ds := range simulator.Map.All("Datastore") {
		fmt.Printf("VCSIM_DATASTORE=%s\n", ds.Reference().Value)
	}
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
