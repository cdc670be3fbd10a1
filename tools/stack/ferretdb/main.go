// Command ferretdb runs FerretDB v1 embedded, as the local stack's MongoDB wire server.
//
// `go install .../cmd/ferretdb` panics at start because the module archive lacks the generated
// build/version/version.txt; the embeddable package skips that check, so this wrapper is the way to
// run it from the module proxy. Telemetry is disabled by the embeddable package itself.
//
// Settings come from the environment:
//
//	FERRETDB_LISTEN_ADDR     TCP address to listen on (default 127.0.0.1:27017)
//	FERRETDB_LISTEN_TLS      TCP address to listen on with TLS (default: none)
//	FERRETDB_LISTEN_TLS_CERT_FILE, FERRETDB_LISTEN_TLS_KEY_FILE  its certificate and key (PEM)
//	FERRETDB_HANDLER         postgresql (default) or sqlite
//	FERRETDB_POSTGRESQL_URL  backend URL for postgresql, e.g. postgres://user:pw@127.0.0.1:5432/ferretdb
//	FERRETDB_SQLITE_URL      backend directory URL for sqlite, e.g. file:/path/to/dir/
//	FERRETDB_LOG_LEVEL       debug, info (default), warn or error
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	var level slog.Level
	if err := level.UnmarshalText([]byte(getenv("FERRETDB_LOG_LEVEL", "info"))); err != nil {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{
			TCP:         getenv("FERRETDB_LISTEN_ADDR", "127.0.0.1:27017"),
			TLS:         os.Getenv("FERRETDB_LISTEN_TLS"),
			TLSCertFile: os.Getenv("FERRETDB_LISTEN_TLS_CERT_FILE"),
			TLSKeyFile:  os.Getenv("FERRETDB_LISTEN_TLS_KEY_FILE"),
		},
		Logger:        logger,
		Handler:       getenv("FERRETDB_HANDLER", "postgresql"),
		PostgreSQLURL: os.Getenv("FERRETDB_POSTGRESQL_URL"),
		SQLiteURL:     os.Getenv("FERRETDB_SQLITE_URL"),
	})
	if err != nil {
		logger.Error("cannot start FerretDB", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	logger.Info("FerretDB started", "uri", f.MongoDBURI())
	if err := f.Run(ctx); err != nil {
		logger.Error("FerretDB stopped with an error", "error", err)
		os.Exit(1)
	}
}

func getenv(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
