package natsjournal

import (
	"fmt"
	"strings"
)

// Token returns the subject token (and KV key part) of a worker ID. A
// worker ID holds letters, digits, '_', '.' and '-'; NATS reads '.' as a
// token separator, so it is written "_d", and '_' itself "__": the
// mapping is one-to-one ("a.b" is "a_db", "a_b" is "a__b", "a_db" is
// "a__db"), and no token holds a '.', '*' or '>' by which a subject of one
// worker could match another's.
func Token(worker string) string {
	if !strings.ContainsAny(worker, "._") {
		return worker
	}
	var b strings.Builder
	b.Grow(len(worker) + 4)
	for i := 0; i < len(worker); i++ {
		switch c := worker[i]; c {
		case '.':
			b.WriteString("_d")
		case '_':
			b.WriteString("__")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Worker returns the worker ID of a token; an error for a token Token
// cannot have made.
func Worker(token string) (string, error) {
	if !strings.Contains(token, "_") {
		return token, nil
	}
	var b strings.Builder
	for i := 0; i < len(token); i++ {
		c := token[i]
		if c != '_' {
			b.WriteByte(c)
			continue
		}
		if i+1 == len(token) {
			return "", fmt.Errorf("natsjournal: token %q ends in an escape", token)
		}
		switch i++; token[i] {
		case 'd':
			b.WriteByte('.')
		case '_':
			b.WriteByte('_')
		default:
			return "", fmt.Errorf("natsjournal: token %q has an unknown escape _%c", token, token[i])
		}
	}
	return b.String(), nil
}
