package transform

import (
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// parseOverrides parses a query string of configuration overrides
// strictly: where url.ParseQuery drops a pair it cannot read and goes on,
// a ';' separator, an escape that is not %XX, and a key or value with a
// control character (a forged "\nkey=value" line) are errors naming the
// key.
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
		q[key] = append(q[key], value)
	}
	return q, nil
}

// checkText refuses a key or value with a control character or invalid
// UTF-8, naming the key as what ("override", "parameter") it came.
func checkText(what, key, value string) error {
	kv := key + value
	if i := strings.IndexFunc(kv, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(kv[i:])
		return fmt.Errorf("%s %q: a control character (%U) in the key or value", what, key, r)
	}
	if !utf8.ValidString(kv) {
		return fmt.Errorf("%s %q: the key or value is not UTF-8", what, key)
	}
	return nil
}
