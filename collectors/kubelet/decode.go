// Package kubelet asks the kubelet which pods hold which devices: the
// PodResourcesLister v1 List call on the kubelet's pod-resources socket
// (/var/lib/kubelet/pod-resources/kubelet.sock), as dcgm-exporter does for
// its pod, namespace and container labels.
//
// The call is one unary gRPC request, made here as what it is on the wire:
// an HTTP/2 POST over the unix socket (cleartext, with prior knowledge) whose
// body is a 5-byte frame header and a protobuf message, and whose outcome is
// the grpc-status trailer. The answer is decoded by hand with protowire,
// keeping only the fields gpuwarden uses. That keeps gRPC's runtime and the
// generated Kubernetes types out of the agent; the tests talk to a real gRPC
// server built from those types.
//
// The socket's peer is trusted no further than any other input: the answer
// is bounded in size and in counts, and every name must have the shape
// Kubernetes itself enforces. An answer that breaks a rule is rejected
// whole, with an error naming the pod and the field.
package kubelet

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Pod is one pod the kubelet lists, with the containers that hold devices.
type Pod struct {
	Namespace  string
	Name       string
	Containers []Container
}

// Container is one container and the devices allocated to it.
type Container struct {
	Name    string
	Devices []Devices
}

// Devices is one resource's devices for a container: for NVIDIA's device
// plugin, resource nvidia.com/gpu with GPU UUIDs (or nvidia.com/mig-<profile>
// with MIG UUIDs). Only resources under nvidia.com/ are kept.
type Devices struct {
	Resource string
	IDs      []string
}

// Limits on one answer. A node runs at most a few hundred pods (the
// kubelet's default --max-pods is 110), so these leave ample room while
// bounding what a hostile peer can make the agent hold.
const (
	MaxResponse      = 4 << 20 // bytes of the protobuf message
	MaxPods          = 2048
	MaxContainers    = 128 // a pod's containers (init and ephemeral included)
	MaxDeviceEntries = 64  // a container's resources with devices
	MaxDeviceIDs     = 1024
	MaxTotalIDs      = 65536 // device ids in the whole answer, kept or not
	maxNameLen       = 253   // DNS-1123 subdomain
	maxLabelLen      = 63    // DNS-1123 label
	maxDeviceIDLen   = 128
)

// The shapes Kubernetes validates names against (apimachinery's
// validation): a namespace and a container name are DNS-1123 labels, a pod
// name a DNS-1123 subdomain; a resource is a qualified name. Device ids are
// the device plugin's: GPU-<uuid>, MIG-<uuid>, nvidia0, <uuid>::<replica>.
var (
	dnsLabelRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	resourceRE     = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	deviceIDRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)
)

// NVIDIAPrefix is the resource prefix of NVIDIA's device plugin; devices of
// other resources (RDMA, SR-IOV NICs) are counted against the limits and
// dropped.
const NVIDIAPrefix = "nvidia.com/"

// ErrRejected marks an answer that broke a limit or a shape rule.
var ErrRejected = errors.New("kubelet answer rejected")

func reject(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrRejected, fmt.Sprintf(format, a...))
}

// Field numbers of podresources/v1 (k8s.io/kubelet/pkg/apis/podresources/v1/api.proto).
const (
	fieldListPods = 1 // ListPodResourcesResponse.pod_resources

	fieldPodName       = 1 // PodResources.name
	fieldPodNamespace  = 2 // PodResources.namespace
	fieldPodContainers = 3 // PodResources.containers

	fieldContainerName    = 1 // ContainerResources.name
	fieldContainerDevices = 2 // ContainerResources.devices

	fieldDevicesResource = 1 // ContainerDevices.resource_name
	fieldDevicesIDs      = 2 // ContainerDevices.device_ids
)

// DecodeList decodes a ListPodResourcesResponse. Fields it does not use
// (CPU ids, memory, dynamic resources, topology, fields added later) are
// skipped; a known field of the wrong wire type, a malformed message, a
// limit or a bad name rejects the whole answer (errors.Is ErrRejected).
func DecodeList(b []byte) ([]Pod, error) {
	if len(b) > MaxResponse {
		return nil, reject("%d bytes is over the %d-byte limit", len(b), MaxResponse)
	}
	d := decoder{}
	var pods []Pod
	err := eachField(b, "response", func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != fieldListPods {
			return nil
		}
		if typ != protowire.BytesType {
			return reject("response: pod_resources has wire type %d", typ)
		}
		if len(pods) >= MaxPods {
			return reject("more than %d pods", MaxPods)
		}
		p, err := d.pod(v, len(pods))
		if err != nil {
			return err
		}
		pods = append(pods, p)
		return nil
	})
	return pods, err
}

type decoder struct {
	ids int // device ids seen in the whole answer
}

func (d *decoder) pod(b []byte, i int) (Pod, error) {
	var p Pod
	where := func() string {
		if p.Name != "" {
			return fmt.Sprintf("pod %d (%s)", i, p.Name)
		}
		return fmt.Sprintf("pod %d", i)
	}
	var raw [][]byte
	err := eachField(b, "pod", func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case fieldPodName, fieldPodNamespace, fieldPodContainers:
			if typ != protowire.BytesType {
				return reject("%s: field %d has wire type %d", where(), num, typ)
			}
		default:
			return nil
		}
		switch num {
		case fieldPodName:
			p.Name = string(v)
		case fieldPodNamespace:
			p.Namespace = string(v)
		case fieldPodContainers:
			if len(raw) >= MaxContainers {
				return reject("%s: more than %d containers", where(), MaxContainers)
			}
			raw = append(raw, v)
		}
		return nil
	})
	if err != nil {
		return Pod{}, err
	}
	if !shaped(p.Name, maxNameLen, dnsSubdomainRE) {
		return Pod{}, reject("pod %d: name %q is not a DNS-1123 subdomain", i, clip(p.Name))
	}
	if !shaped(p.Namespace, maxLabelLen, dnsLabelRE) {
		return Pod{}, reject("%s: namespace %q is not a DNS-1123 label", where(), clip(p.Namespace))
	}
	for _, cb := range raw {
		c, err := d.container(cb, where())
		if err != nil {
			return Pod{}, err
		}
		if len(c.Devices) > 0 {
			p.Containers = append(p.Containers, c)
		}
	}
	return p, nil
}

func (d *decoder) container(b []byte, pod string) (Container, error) {
	var c Container
	var raw [][]byte
	err := eachField(b, "container", func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case fieldContainerName, fieldContainerDevices:
			if typ != protowire.BytesType {
				return reject("%s: container field %d has wire type %d", pod, num, typ)
			}
		default:
			return nil
		}
		if num == fieldContainerName {
			c.Name = string(v)
			return nil
		}
		if len(raw) >= MaxDeviceEntries {
			return reject("%s: a container has more than %d device entries", pod, MaxDeviceEntries)
		}
		raw = append(raw, v)
		return nil
	})
	if err != nil {
		return Container{}, err
	}
	if !shaped(c.Name, maxLabelLen, dnsLabelRE) {
		return Container{}, reject("%s: container name %q is not a DNS-1123 label", pod, clip(c.Name))
	}
	where := pod + " container " + c.Name
	for _, db := range raw {
		dv, err := d.devices(db, where)
		if err != nil {
			return Container{}, err
		}
		if strings.HasPrefix(dv.Resource, NVIDIAPrefix) && len(dv.IDs) > 0 {
			c.Devices = append(c.Devices, dv)
		}
	}
	return c, nil
}

func (d *decoder) devices(b []byte, where string) (Devices, error) {
	var dv Devices
	var ids [][]byte
	err := eachField(b, "devices", func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case fieldDevicesResource, fieldDevicesIDs:
			if typ != protowire.BytesType {
				return reject("%s: devices field %d has wire type %d", where, num, typ)
			}
		default:
			return nil
		}
		if num == fieldDevicesResource {
			dv.Resource = string(v)
			return nil
		}
		d.ids++
		if len(ids) >= MaxDeviceIDs || d.ids > MaxTotalIDs {
			return reject("%s: too many device ids (%d in one entry at most, %d in all)", where, MaxDeviceIDs, MaxTotalIDs)
		}
		ids = append(ids, v)
		return nil
	})
	if err != nil {
		return Devices{}, err
	}
	if !shaped(dv.Resource, maxNameLen, resourceRE) {
		return Devices{}, reject("%s: resource name %q is not a qualified name", where, clip(dv.Resource))
	}
	if !strings.HasPrefix(dv.Resource, NVIDIAPrefix) {
		return dv, nil // not ours: counted, not kept
	}
	dv.IDs = make([]string, 0, len(ids))
	for _, id := range ids {
		if !shaped(string(id), maxDeviceIDLen, deviceIDRE) {
			return Devices{}, reject("%s: %s device id %q has a shape no device plugin uses", where, dv.Resource, clip(string(id)))
		}
		dv.IDs = append(dv.IDs, string(id))
	}
	return dv, nil
}

// eachField calls f for every field of the message b, with the field's
// value (the payload of a length-delimited field; the raw bytes of others).
func eachField(b []byte, what string, f func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return reject("%s: bad field tag: %v", what, protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n >= 0 {
				v = b[:n]
			}
		}
		if n < 0 {
			return reject("%s: field %d: %v", what, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}

func shaped(s string, max int, re *regexp.Regexp) bool {
	return s != "" && len(s) <= max && re.MatchString(s)
}

// clip shortens a rejected value for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
