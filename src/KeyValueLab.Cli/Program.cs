using KeyValueLab.Native;
using TorchSharp;
TorchRuntime.EnsureLoaded();
var t = torch.ones(3, 3);
Console.WriteLine(t.matmul(t).sum().item<float>());
Console.Error.WriteLine($"patched={TorchRuntime.PatchedLibraryPath} missing={string.Join(",", TorchRuntime.MissingVersions)}");
