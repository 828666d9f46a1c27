package transform

import (
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/soplug/soplug/internal/access"
)

// parseOverrides parses a query string of configuration overrides
// strictly: where url.ParseQuery drops a pair it cannot read and goes on,
// a ';' separator, an escape that is not %XX, a key with a control
// character and a key or value that is not UTF-8 are errors naming the
// key. A value may hold any text, newlines included (a PEM key). The
// runner's own query parameters (see reserved) are left out.
func parseOverrides(raw string) (url.Values, error) {
	q := url.Values{}
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		name := rawKey
		key, err := url.QueryUnescape(rawKey)
		if err == nil {
			name = key
		}
		switch {
		case strings.Contains(pair, ";"):
			return nil, fmt.Errorf("override %q: a ';' in the query string (separate overrides with '&', escape a ';' in a value as %%3B)", name)
		case err != nil:
			return nil, fmt.Errorf("override %q: the key is not URL-encoded: %v", name, err)
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return nil, fmt.Errorf("override %q: the value is not URL-encoded: %v", name, err)
		}
		if err := checkText("override", key, value); err != nil {
			return nil, err
		}
		if reserved(key) {
			continue
		}
		q[key] = append(q[key], value)
	}
	return q, nil
}

// checkText refuses a key with a control character, and a key or value
// that is not UTF-8, naming the key as what ("override", "parameter") it
// came. Values are otherwise as they are: Golem sends them as-is, and a
// PEM key or a multi-line configuration must reach the plugin intact.
func checkText(what, key, value string) error {
	if i := strings.IndexFunc(key, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(key[i:])
		return fmt.Errorf("%s %q: a control character (%U) in the key", what, key, r)
	}
	if !utf8.ValidString(key) || !utf8.ValidString(value) {
		return fmt.Errorf("%s %q: the key or value is not UTF-8", what, key)
	}
	return nil
}

// QueryAnswer is a query parameter of the runner's own, which no plugin
// sees: it chooses the answer to Golem's form: "raw" (the component
// alone, as Golem 1.1 and 1.2 read it) or "json" (1.3, 1.4); absent,
// the metadata tells (see serveGolem).
const QueryAnswer = "soplug.answer"

// reserved reports whether a query key is the runner's own: QueryAnswer,
// or the token of access.QueryToken.
func reserved(key string) bool { return key == QueryAnswer || key == access.QueryToken }
