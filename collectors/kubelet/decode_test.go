package kubelet

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

func TestDecodeSkipsFieldsItDoesNotUse(t *testing.T) {
	// A field a later kubelet may add (number 99, every wire type) inside
	// every message, beside the ones the generated types know.
	unknown := func(b []byte) []byte {
		b = protowire.AppendTag(b, 99, protowire.VarintType)
		b = protowire.AppendVarint(b, 7)
		b = protowire.AppendTag(b, 98, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, 1)
		b = protowire.AppendTag(b, 97, protowire.BytesType)
		return protowire.AppendBytes(b, []byte("later"))
	}
	dev, _ := proto.Marshal(&podresourcesv1.ContainerDevices{ResourceName: "nvidia.com/gpu", DeviceIds: []string{"GPU-a"}})
	ctr, _ := proto.Marshal(&podresourcesv1.ContainerResources{Name: "c", CpuIds: []int64{1, 2}})
	ctr = protowire.AppendBytes(protowire.AppendTag(ctr, fieldContainerDevices, protowire.BytesType), unknown(dev))
	pod, _ := proto.Marshal(&podresourcesv1.PodResources{Name: "p", Namespace: "ns"})
	pod = protowire.AppendBytes(protowire.AppendTag(pod, fieldPodContainers, protowire.BytesType), unknown(ctr))
	resp := protowire.AppendBytes(protowire.AppendTag(unknown(nil), fieldListPods, protowire.BytesType), unknown(pod))
	pods, err := DecodeList(resp)
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 1 || pods[0].Name != "p" || pods[0].Namespace != "ns" || len(pods[0].Containers) != 1 ||
		pods[0].Containers[0].Name != "c" || len(pods[0].Containers[0].Devices) != 1 || pods[0].Containers[0].Devices[0].IDs[0] != "GPU-a" {
		t.Fatalf("pods = %+v", pods)
	}
}

func TestDecodeRejectsMalformedMessages(t *testing.T) {
	pod, _ := proto.Marshal(&podresourcesv1.PodResources{Name: "p", Namespace: "ns"})
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"a truncated length", []byte{0x0a, 0x20, 'p'}},
		{"a bad tag", []byte{0x80}},
		{"pods as a varint", protowire.AppendVarint(protowire.AppendTag(nil, fieldListPods, protowire.VarintType), 3)},
		{"a pod name as a varint", protowire.AppendBytes(protowire.AppendTag(nil, fieldListPods, protowire.BytesType),
			protowire.AppendVarint(protowire.AppendTag(pod, fieldPodName, protowire.VarintType), 1))},
		{"a group that never ends", protowire.AppendTag(nil, 5, protowire.StartGroupType)},
	} {
		if pods, err := DecodeList(tc.b); !errors.Is(err, ErrRejected) {
			t.Errorf("%s: DecodeList = %+v, %v; want a rejection", tc.name, pods, err)
		}
	}
}

func TestDecodeCountsOtherVendorsDevicesAgainstTheLimit(t *testing.T) {
	ids := make([]string, MaxDeviceIDs+1)
	for i := range ids {
		ids[i] = "rdma0"
	}
	b, _ := proto.Marshal(&podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{{Name: "p", Namespace: "ns",
		Containers: []*podresourcesv1.ContainerResources{{Name: "c", Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "rdma/hca", DeviceIds: ids}}}}}}})
	if _, err := DecodeList(b); !errors.Is(err, ErrRejected) {
		t.Fatalf("DecodeList = %v, want a rejection for the id count", err)
	}
}

func TestDeviceIDKinds(t *testing.T) {
	for id, want := range map[string]string{
		"GPU-1cf032cc-d3c4-4e14-4557-ceade3a8c237": IDGPU,
		"MIG-8b22c5b0-4c7e-5a1f-9e3b-1d2c3b4a5f6e": IDMIG,
		"nvidia3":      IDDeviceName, // GKE's device plugin
		"nvidia":       IDOther,
		"0000:18:00.0": IDOther,
	} {
		if got := IDKind(id); got != want {
			t.Errorf("IDKind(%q) = %s, want %s", id, got, want)
		}
	}
}

func FuzzDecodeList(f *testing.F) {
	for _, r := range []*podresourcesv1.ListPodResourcesResponse{aNode(), {}} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x01, 'P', 0x12, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		pods, err := DecodeList(b)
		if err != nil {
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("an error that is not a rejection: %v", err)
			}
			return
		}
		if len(pods) > MaxPods {
			t.Fatalf("%d pods", len(pods))
		}
		for _, p := range pods {
			if !dnsSubdomainRE.MatchString(p.Name) || !dnsLabelRE.MatchString(p.Namespace) || len(p.Containers) > MaxContainers {
				t.Fatalf("pod %+v", p)
			}
			for _, c := range p.Containers {
				if !dnsLabelRE.MatchString(c.Name) || len(c.Name) > maxLabelLen {
					t.Fatalf("container %q", c.Name)
				}
				for _, d := range c.Devices {
					if !strings.HasPrefix(d.Resource, NVIDIAPrefix) {
						t.Fatalf("kept resource %q", d.Resource)
					}
					for _, id := range d.IDs {
						if strings.ContainsAny(id, " \n\"\\{}=,") || len(id) > maxDeviceIDLen {
							t.Fatalf("device id %q", id)
						}
					}
				}
			}
		}
	})
}
