package pluginconf

import (
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// keyLines maps every key path the TOML document data sets (table headers
// and key/value pairs, inline tables included) to the line it is on, so
// that a check made after decoding can name the line. The document has
// already decoded without error.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	var table []string
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyOf(n.Key())
			record(&p, lines, table, n.Key())
		case unstable.KeyValue:
			walkKeyValue(&p, lines, table, n)
		}
	}
	return lines
}

// walkKeyValue records a key/value pair under prefix, and the pairs of an
// inline table it holds.
func walkKeyValue(p *unstable.Parser, lines map[string]int, prefix []string, n *unstable.Node) {
	key := append(append([]string(nil), prefix...), keyOf(n.Key())...)
	record(p, lines, key, n.Key())
	if v := n.Value(); v.Kind == unstable.InlineTable {
		for it := v.Children(); it.Next(); {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				walkKeyValue(p, lines, key, c)
			}
		}
	}
}

// record sets the line of path, and of each shorter path it passes through
// that has no line yet, from the key's first part.
func record(p *unstable.Parser, lines map[string]int, path []string, it unstable.Iterator) {
	if !it.Next() {
		return
	}
	line := p.Shape(it.Node().Raw).Start.Line
	for i := 1; i <= len(path); i++ {
		k := strings.Join(path[:i], ".")
		if _, ok := lines[k]; !ok || i == len(path) {
			lines[k] = line
		}
	}
}

func keyOf(it unstable.Iterator) []string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}
