package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/prometheus/exporter-toolkit/web"
)

// serve is exporter-toolkit's ListenAndServe with two things it lacks: a
// cap on open connections (each costs a file descriptor and memory, and
// an idle keep-alive holds one until IdleTimeout), and the server's own
// errors (TLS handshakes) written through the agent's logger.
func serve(srv *http.Server, cfg Config, log *slog.Logger) error {
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	var listeners []net.Listener
	if cfg.SystemdSocket {
		log.Info("Listening on systemd activated listeners instead of port listeners.")
		ls, err := activation.Listeners()
		if err != nil {
			return err
		}
		if len(ls) == 0 {
			return errors.New("no socket activation file descriptors found (web.systemd-socket is set)")
		}
		listeners = ls
	} else {
		for _, addr := range cfg.ListenAddresses {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				for _, o := range listeners {
					o.Close()
				}
				return fmt.Errorf("listen on %s: %w", addr, err)
			}
			listeners = append(listeners, l)
		}
	}
	flags := &web.FlagConfig{WebListenAddresses: &cfg.ListenAddresses, WebSystemdSocket: &cfg.SystemdSocket, WebConfigFile: &cfg.WebConfigFile}
	for i, l := range listeners {
		listeners[i] = limitListener(l, cfg.WebMaxConnections)
	}
	return web.ServeMultiple(listeners, srv, flags, log)
}

// limitListener accepts at most n connections at once; more wait in the
// kernel's backlog until one closes. n <= 0 is no limit.
func limitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		return l
	}
	return &limited{Listener: l, sem: make(chan struct{}, n)}
}

type limited struct {
	net.Listener
	sem chan struct{}
}

func (l *limited) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// httpServer is the agent's server with every timeout set: a slow or idle
// client cannot hold a connection, a handler or memory for ever.
func httpServer(h http.Handler, cfg Config) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.WebReadHeaderTimeout,
		ReadTimeout:       cfg.WebReadTimeout,
		WriteTimeout:      cfg.WebWriteTimeout,
		IdleTimeout:       cfg.WebIdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
}
