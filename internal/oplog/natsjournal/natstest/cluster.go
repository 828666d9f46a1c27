package natstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Node is one server of a Cluster.
type Node struct {
	// Name is its server_name.
	Name string
	// URL is its client URL.
	URL  string
	conf string
	cmd  *exec.Cmd
}

// Cluster is a JetStream cluster of nodes on loopback ports.
type Cluster struct {
	Nodes []*Node
	bin   string
	t     T
}

// freePort returns a loopback port nothing listens on now.
func freePort(t T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartCluster starts n nats-servers with JetStream, routed to each
// other, and waits until JetStream answers through each; they are
// killed at the test's end.
func StartCluster(t T, n int) *Cluster {
	t.Helper()
	c := &Cluster{bin: Binary(t), t: t}
	dir := t.TempDir()
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
	}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		conf := filepath.Join(dir, name+".conf")
		body := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
max_payload: %d
jetstream { store_dir: %q }
cluster {
  name: soplug-test
  listen: "127.0.0.1:%d"
  routes: [%s]
}
`, name, clientPorts[i], MaxPayload, filepath.Join(dir, name), routePorts[i], strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatalf("natstest: %v", err)
		}
		node := &Node{Name: name, URL: fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]), conf: conf}
		c.Nodes = append(c.Nodes, node)
		c.start(node)
	}
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			node.kill()
		}
	})
	for _, node := range c.Nodes {
		c.waitJetStream(node.URL)
	}
	return c
}

func (c *Cluster) start(node *Node) {
	node.cmd = exec.Command(c.bin, "-c", node.conf)
	if err := node.cmd.Start(); err != nil {
		c.t.Fatalf("natstest: starting %s: %v", node.Name, err)
	}
}

// waitJetStream waits until JetStream answers through url.
func (c *Cluster) waitJetStream(url string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := func() error {
			nc, err := nats.Connect(url)
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = js.AccountInfo(ctx)
			return err
		}()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: JetStream at %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// URLs returns every node's client URL, comma-separated, as nats.Connect
// takes them.
func (c *Cluster) URLs() string {
	var u []string
	for _, node := range c.Nodes {
		u = append(u, node.URL)
	}
	return strings.Join(u, ",")
}

// Node returns the node named name.
func (c *Cluster) Node(name string) *Node {
	for _, node := range c.Nodes {
		if node.Name == name {
			return node
		}
	}
	c.t.Fatalf("natstest: no node %q", name)
	return nil
}

// Kill kills node with SIGKILL and waits for it.
func (c *Cluster) Kill(node *Node) { node.kill() }

// Restart starts a killed node again on its store.
func (c *Cluster) Restart(node *Node) {
	c.start(node)
	c.waitJetStream(node.URL)
}

// Pause stops node with SIGSTOP: it holds its connections and answers
// nothing, a replica falling behind, until Resume.
func (c *Cluster) Pause(node *Node) { node.signal(syscall.SIGSTOP) }

// Resume continues a paused node with SIGCONT.
func (c *Cluster) Resume(node *Node) { node.signal(syscall.SIGCONT) }

func (n *Node) signal(sig syscall.Signal) {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// ConnectTo returns a connection to node alone (reconnecting without
// end, never to another node), closed at the test's end.
func (c *Cluster) ConnectTo(t T, node *Node) *nats.Conn {
	t.Helper()
	return c.connect(t, node.URL, nats.DontRandomize(), nats.IgnoreDiscoveredServers())
}

func (n *Node) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	_ = n.cmd.Wait()
	n.cmd = nil
}

// Connect returns a connection to every node of c (reconnecting without
// end), closed at the test's end.
func (c *Cluster) Connect(t T) *nats.Conn {
	t.Helper()
	return c.connect(t, c.URLs())
}

func (c *Cluster) connect(t T, urls string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		t.Fatalf("natstest: connecting to %s: %v", urls, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
