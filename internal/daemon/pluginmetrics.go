package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/soplug/soplug/loader"
)

// DefaultPluginScrapeTimeout bounds the scrape of every plugin process's
// /metrics that one scrape of the daemon's /metrics makes.
const DefaultPluginScrapeTimeout = 500 * time.Millisecond

// maxPluginMetricsBytes bounds what one plugin process's /metrics may
// send.
const maxPluginMetricsBytes = 16 << 20

// scrapeTarget is a plugin process that serves its own /metrics.
type scrapeTarget struct {
	name, version, addr string
}

// targets returns the plugin processes of sel that serve /metrics.
func targets(sel *loader.Selection) []scrapeTarget {
	var out []scrapeTarget
	for _, c := range sel.Selected() {
		if st := c.ProcessStatus(); st != nil && st.MetricsAddr != "" {
			out = append(out, scrapeTarget{name: c.Name, version: c.Version.String(), addr: st.MetricsAddr})
		}
	}
	return out
}

// pluginGatherer gathers the plugin processes' own series when the daemon
// is scraped: each process's /metrics, fetched at once within timeout,
// with plugin and version labels added to every series. A process that
// does not answer in time, or answers with something that does not parse,
// loses its series for this scrape and counts a scrape error; the daemon's
// scrape goes on.
type pluginGatherer struct {
	targets []scrapeTarget
	timeout time.Duration
	client  *http.Client
	errors  *prometheus.CounterVec
	log     *slog.Logger
}

func newPluginGatherer(sel *loader.Selection, timeout time.Duration, reg prometheus.Registerer, log *slog.Logger) (*pluginGatherer, error) {
	if timeout <= 0 {
		timeout = DefaultPluginScrapeTimeout
	}
	g := &pluginGatherer{targets: targets(sel), timeout: timeout, log: log,
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "soplug_plugin_scrape_errors_total",
			Help: "Scrapes of a plugin process's /metrics, made while the daemon was scraped, that failed or took longer than the deadline; its series were left out of that scrape."},
			[]string{"plugin", "version"})}
	for _, t := range g.targets {
		g.errors.WithLabelValues(t.name, t.version) // at 0 from the start
	}
	return g, reg.Register(g.errors)
}

// Gather returns the plugin processes' families, merged by name. It never
// fails: what fails is counted.
func (g *pluginGatherer) Gather() ([]*dto.MetricFamily, error) {
	if len(g.targets) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	got := make([]map[string]*dto.MetricFamily, len(g.targets))
	var wg sync.WaitGroup
	for i, t := range g.targets {
		wg.Go(func() {
			fams, err := g.scrape(ctx, t)
			if err != nil {
				g.errors.WithLabelValues(t.name, t.version).Inc()
				g.log.Debug("scraping a plugin process", "plugin", t.name, "version", t.version, "addr", t.addr, "err", err)
				return
			}
			got[i] = fams
		})
	}
	wg.Wait()
	merged := map[string]*dto.MetricFamily{}
	for i, fams := range got {
		t := g.targets[i]
		for name, mf := range fams {
			labelled(mf, t)
			if have, ok := merged[name]; ok {
				if have.GetType() != mf.GetType() {
					continue // two versions disagree on the type: the first one's stays
				}
				have.Metric = append(have.Metric, mf.Metric...)
				continue
			}
			merged[name] = mf
		}
	}
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, name := range slices.Sorted(maps.Keys(merged)) {
		out = append(out, merged[name])
	}
	return out, nil
}

// scrape fetches and parses one process's /metrics.
func (g *pluginGatherer) scrape(ctx context.Context, t scrapeTarget) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(io.LimitReader(resp.Body, maxPluginMetricsBytes))
}

// labelled adds plugin and version labels to every series of mf; a label
// of that name the plugin set itself is kept as exported_<name>, as
// Prometheus does with honor_labels off.
func labelled(mf *dto.MetricFamily, t scrapeTarget) {
	for _, m := range mf.Metric {
		for _, l := range m.Label {
			if n := l.GetName(); n == "plugin" || n == "version" {
				l.Name = proto.String("exported_" + n)
			}
		}
		m.Label = append(m.Label, &dto.LabelPair{Name: proto.String("plugin"), Value: proto.String(t.name)},
			&dto.LabelPair{Name: proto.String("version"), Value: proto.String(t.version)})
		slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	}
}

// discoveryGroup is one target group of Prometheus's HTTP service
// discovery.
type discoveryGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// discoveryHandler serves /v1/discovery: Prometheus HTTP service
// discovery of the plugin processes' own /metrics, one target group each,
// labelled plugin and version.
func discoveryHandler(sel *loader.Selection) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		groups := []discoveryGroup{}
		for _, t := range targets(sel) {
			groups = append(groups, discoveryGroup{Targets: []string{t.addr}, Labels: map[string]string{"plugin": t.name, "version": t.version}})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(groups)
	})
}
