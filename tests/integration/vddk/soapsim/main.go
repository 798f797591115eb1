// soapsim: the vSphere SOAP stand-in of the project's VDDK tests.
//
// A small main around the "simulator" package of govmomi as Debian ships it
// (golang-github-vmware-govmomi-dev; Debian has no vcsim command). It serves an ESXi host
// (or, with -vpx, a vCenter) on a loopback address through a TLS front (front.go) that makes
// the answers acceptable to libvirt's ESX driver. The one datastore is a directory the tests
// control: for each VM name, DSDIR/NAME/ holds the disks and -vmx-dir/NAME.vmx the .vmx that
// replaces the simulator's empty one, so libvirt downloads our .vmx over /folder/.
//
// The password is read from a file (-password-file), never taken from argv. Once serving,
// the main writes a JSON description (-ready-file): URL, datacenter, host, VM morefs.
//
// Build (offline): GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off go build
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type options struct {
	listen, user, passwordFile, dsName, dsDir, vmxDir, cert, key, readyFile string
	vms, poweredOn                                                          []string
	vpx, trace                                                              bool
}

type ready struct {
	URL        string            `json:"url"`
	Datacenter string            `json:"datacenter"`
	Host       string            `json:"host"`
	Morefs     map[string]string `json:"morefs"`
	Backend    string            `json:"backend"`
}

func list(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

func parseFlags() options {
	var o options
	var vms, on string
	flag.StringVar(&o.listen, "l", "127.0.0.1:0", "TLS listen address (loopback only)")
	flag.StringVar(&o.user, "user", "root", "the one user that may log in")
	flag.StringVar(&o.passwordFile, "password-file", "", "file holding the password (required)")
	flag.StringVar(&o.dsName, "ds", "datastore1", "datastore name")
	flag.StringVar(&o.dsDir, "ds-dir", "", "directory backing the datastore (required)")
	flag.StringVar(&o.vmxDir, "vmx-dir", "", "directory with NAME.vmx files (required)")
	flag.StringVar(&o.cert, "cert", "", "PEM certificate of the TLS front (required)")
	flag.StringVar(&o.key, "key", "", "PEM key of -cert (required)")
	flag.StringVar(&o.readyFile, "ready-file", "", "write the JSON description here when serving")
	flag.StringVar(&vms, "vms", "", "comma-separated VM names")
	flag.StringVar(&on, "powered-on", "", "comma-separated VM names to power on")
	flag.BoolVar(&o.vpx, "vpx", false, "a vCenter instead of an ESXi host")
	flag.BoolVar(&o.trace, "trace", false, "dump SOAP traffic to stderr")
	flag.Parse()
	o.vms, o.poweredOn = list(vms), list(on)
	if o.passwordFile == "" || o.dsDir == "" || o.vmxDir == "" || o.cert == "" || o.key == "" {
		log.Fatal("-password-file, -ds-dir, -vmx-dir, -cert and -key are required")
	}
	if !strings.HasPrefix(o.listen, "127.") {
		log.Fatal("-l must be a 127.0.0.0/8 address")
	}
	return o
}

func newModel(vpx bool) *simulator.Model {
	m := simulator.ESX()
	if vpx {
		m = simulator.VPX()
		m.Cluster, m.ClusterHost, m.Pool, m.Portgroup = 0, 0, 0, 0
	}
	m.Datastore, m.Machine, m.Autostart = 0, 0, false // our own datastore and VMs only
	return m
}

// addVM registers NAME on the datastore, then puts our .vmx in place of the simulator's.
func addVM(ctx context.Context, o options, f *find.Finder, dc *object.Datacenter,
	host *object.HostSystem, name string) (string, error) {
	vmx, err := ioutil.ReadFile(filepath.Join(o.vmxDir, name+".vmx"))
	if err != nil {
		return "", err
	}
	dir := filepath.Join(o.dsDir, name)
	for _, stale := range []string{name + ".vmx", name + ".nvram", "vmware.log"} {
		os.Remove(filepath.Join(dir, stale)) // the simulator will not create over them
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return "", err
	}
	pool, err := host.ResourcePool(ctx)
	if err != nil {
		return "", err
	}
	spec := types.VirtualMachineConfigSpec{
		Name: name, GuestId: "debian10_64Guest", NumCPUs: 1, MemoryMB: 1024,
		Files: &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s] %s/%s.vmx", o.dsName, name, name)},
	}
	task, err := folders.VmFolder.CreateVM(ctx, spec, pool, host)
	if err != nil {
		return "", err
	}
	res, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return "", err
	}
	if err := ioutil.WriteFile(filepath.Join(dir, name+".vmx"), vmx, 0644); err != nil {
		return "", err
	}
	for _, on := range o.poweredOn {
		if on == name {
			vm, err := f.VirtualMachine(ctx, name)
			if err != nil {
				return "", err
			}
			t, err := vm.PowerOn(ctx)
			if err != nil {
				return "", err
			}
			if err := t.Wait(ctx); err != nil {
				return "", err
			}
		}
	}
	return res.Result.(types.ManagedObjectReference).Value, nil
}

// populate logs in to the simulator as its user and builds the inventory.
func populate(ctx context.Context, o options, sdk *url.URL, r *ready) error {
	c, err := govmomi.NewClient(ctx, sdk, true)
	if err != nil {
		return err
	}
	defer c.Logout(ctx)
	f := find.NewFinder(c.Client, false)
	dc, err := f.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	f.SetDatacenter(dc)
	host, err := f.DefaultHostSystem(ctx)
	if err != nil {
		return err
	}
	r.Datacenter, r.Host = dc.Name(), host.Name()
	dss, err := host.ConfigManager().DatastoreSystem(ctx)
	if err != nil {
		return err
	}
	if _, err := dss.CreateLocalDatastore(ctx, o.dsName, o.dsDir); err != nil {
		return err
	}
	for _, name := range o.vms {
		moref, err := addVM(ctx, o, f, dc, host, name)
		if err != nil {
			return fmt.Errorf("VM %s: %v", name, err)
		}
		r.Morefs[name] = moref
	}
	return nil
}

func main() {
	o := parseFlags()
	simulator.Trace = o.trace
	pw, err := ioutil.ReadFile(o.passwordFile)
	if err != nil {
		log.Fatal(err)
	}
	password := strings.TrimRight(string(pw), "\r\n")
	if o.dsDir, err = filepath.Abs(o.dsDir); err != nil {
		log.Fatal(err)
	}
	m := newModel(o.vpx)
	if err := m.Create(); err != nil {
		log.Fatal(err)
	}
	defer m.Remove()
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(o.user, password)}
	backend := m.Service.NewServer()
	defer backend.Close()
	sdk := *backend.URL
	sdk.User = url.UserPassword(o.user, password)
	r := ready{Morefs: map[string]string{}, Backend: backend.URL.Host}
	if err := populate(context.Background(), o, &sdk, &r); err != nil {
		log.Fatal(err)
	}
	front, addr, err := serveFront(o.listen, backend.URL, o.cert, o.key)
	if err != nil {
		log.Fatal(err)
	}
	defer front.Close()
	r.URL = "https://" + addr + "/sdk"
	if o.readyFile != "" {
		b, _ := json.Marshal(r)
		tmp := o.readyFile + ".tmp"
		if err := ioutil.WriteFile(tmp, b, 0644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, o.readyFile); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("serving %s (simulator at %s), VMs %v", r.URL, r.Backend, r.Morefs)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
