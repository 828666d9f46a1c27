package access

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// QueryToken is the query parameter a caller that cannot send an
// Authorization header puts its token in (RFC 6750's access_token): Golem's
// transformer caller sends no header of its own, so its registered URL
// carries it. It is never logged.
const QueryToken = "access_token"

// Config configures a Guard. The zero value guards nothing: no tokens are
// asked for and the listener is plain TCP.
type Config struct {
	// TokensFile is the tokens file (see the package doc). Empty means
	// every request is let through.
	TokensFile string
	// CertFile and KeyFile are the TLS certificate (chain, PEM) and its
	// key. Both empty means plain TCP; one without the other is an error.
	CertFile, KeyFile string
	// Logger receives reloads and failed reloads. Nil means none.
	Logger *slog.Logger
}

// Guard is the listener's guard: a Handler that asks for tokens and a TLS
// configuration, each reloaded when its files change. A nil *Guard guards
// nothing.
type Guard struct {
	tokens *reloading[*Tokens]
	cert   *reloading[*tls.Certificate]
	log    *slog.Logger

	refused  *prometheus.CounterVec
	failures prometheus.Counter
}

// New loads cfg's files: an error names the file and the reason.
func New(cfg Config) (*Guard, error) {
	g := &Guard{log: cfg.Logger}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "soplug_http_refused_total",
		Help: "Requests refused for want of a token (reason no_token), with a token that is none of the file's (bad_token), or with one whose scopes do not cover the route (scope).",
	}, []string{"reason"})
	g.failures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "soplug_access_reload_failures_total",
		Help: "Changed tokens or certificate files that could not be loaded; the ones loaded before stay in use.",
	})
	for _, reason := range []string{"no_token", "bad_token", "scope"} {
		g.refused.WithLabelValues(reason)
	}
	var err error
	if cfg.TokensFile != "" {
		if g.tokens, err = newReloading(g.log, func() (*Tokens, error) { return LoadTokens(cfg.TokensFile) }, cfg.TokensFile); err != nil {
			return nil, err
		}
		g.tokens.failed = g.failures.Inc
	}
	switch {
	case cfg.CertFile == "" && cfg.KeyFile == "":
	case cfg.CertFile == "" || cfg.KeyFile == "":
		return nil, errors.New("access: TLS needs both a certificate file and a key file")
	default:
		load := func() (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("access: TLS certificate %s and key %s: %w", cfg.CertFile, cfg.KeyFile, err)
			}
			return &c, nil
		}
		if g.cert, err = newReloading(g.log, load, cfg.CertFile, cfg.KeyFile); err != nil {
			return nil, err
		}
		g.cert.failed = g.failures.Inc
	}
	return g, nil
}

// TLSConfig is the listener's TLS configuration, whose certificate is
// the files' as they are now (reloaded at most every CheckEvery); nil when
// the listener is plain TCP.
func (g *Guard) TLSConfig() *tls.Config {
	if g == nil || g.cert == nil {
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return g.cert.get(), nil
		},
	}
}

// Collectors are the guard's metrics, for the daemon's registry; none for
// a nil Guard.
func (g *Guard) Collectors() []prometheus.Collector {
	if g == nil {
		return nil
	}
	return []prometheus.Collector{g.refused, g.failures}
}

// Handler asks every request but the health probes for a token whose
// scopes cover its route (ScopeOf): from "Authorization: Bearer TOKEN", or
// the QueryToken parameter when there is no such header. None is a 401
// with WWW-Authenticate; one the file does not hold is a 401 too; one
// without the route's scope is a 403 naming the scope. next never sees a
// refused request. Without a tokens file it is next.
func (g *Guard) Handler(next http.Handler) http.Handler {
	if g == nil || g.tokens == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scope, guarded := ScopeOf(r)
		if !guarded {
			next.ServeHTTP(w, r)
			return
		}
		presented, ok := bearer(r)
		if !ok {
			g.refuse(w, "no_token", http.StatusUnauthorized, `Bearer realm="soplug"`,
				"a token is needed: send Authorization: Bearer TOKEN (or ?"+QueryToken+"=TOKEN where no header can be set)")
			return
		}
		name, scopes, ok := g.tokens.get().lookup(presented)
		switch {
		case !ok:
			g.refuse(w, "bad_token", http.StatusUnauthorized, `Bearer realm="soplug", error="invalid_token"`, "the token is not one of the runner's")
		case !slices.Contains(scopes, scope):
			g.refuse(w, "scope", http.StatusForbidden, fmt.Sprintf(`Bearer realm="soplug", error="insufficient_scope", scope="%s"`, scope),
				fmt.Sprintf("token %s may not call %s %s: it needs scope %s (it has %s)", name, r.Method, r.URL.Path, scope, joinScopes(scopes)))
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func (g *Guard) refuse(w http.ResponseWriter, reason string, code int, challenge, msg string) {
	g.refused.WithLabelValues(reason).Inc()
	w.Header().Set("WWW-Authenticate", challenge)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// bearer returns the token r presents.
func bearer(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		tok = strings.TrimSpace(tok)
		return tok, strings.EqualFold(scheme, "Bearer") && tok != ""
	}
	tok := r.URL.Query().Get(QueryToken)
	return tok, tok != ""
}

// ScopeOf is the scope r's route needs, and false for the health probes,
// which need none (systemd's and a load balancer's checks carry no token).
func ScopeOf(r *http.Request) (Scope, bool) {
	p := r.URL.Path
	switch {
	case p == "/healthz" || p == "/readyz":
		return "", false
	case p == "/v1/transform" || strings.HasPrefix(p, "/v1/transform/"):
		return Transform, true
	case strings.HasPrefix(p, "/v1/workers/") && strings.HasSuffix(p, "/oplog"):
		return Append, true
	default:
		return Control, true
	}
}

func joinScopes(s []Scope) string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return strings.Join(out, ", ")
}
