using KeyValueLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Memory;

/// <summary>
/// Deep copies of chosen parameters (never views or aliases of the live weights), restorable bit for
/// bit. Edits between cases restore from one snapshot, so no edit leaks into the next case.
/// </summary>
/// <remarks>
/// A named weight still kept in its stored BF16/F16 bytes (<see cref="StoredWeight"/>) is made an fp32 master (it is about to
/// be edited), but the snapshot keeps those stored bytes, not an fp32 copy, and <see cref="Restore"/> puts the weight back in
/// that form: the master is released, so an edit leaves nothing resident beyond the stored bytes (widening them is exact, so
/// this is bit-exact too). Other named weights, and other frozen forms (NF4), are saved as fp32 copies of their masters.
/// <see cref="TakeAll"/> leaves frozen weights out, since nothing can change them without first making them masters.
/// </remarks>
public sealed class WeightSnapshot : IDisposable
{
    private readonly Dictionary<string, Tensor> _saved;
    private readonly Dictionary<string, string> _storedModules;  // parameter name → module name, for weights saved as stored
    private readonly Dictionary<string, IFrozenWeight> _installed = new(StringComparer.Ordinal);  // what the last restore froze them with (owned by the linear)

    private WeightSnapshot(Dictionary<string, Tensor> saved, Dictionary<string, string> storedModules) => (_saved, _storedModules) = (saved, storedModules);

    /// <summary>The parameter names held.</summary>
    public IReadOnlyCollection<string> Names => _saved.Keys;

    /// <summary>The saved copy of one parameter (do not modify): fp32, or for a weight kept as stored its BF16/F16 bytes.</summary>
    public Tensor this[string name] => _saved[name];

    /// <summary>Copies the named parameters of <paramref name="model"/> (unknown names throw <see cref="ArgumentException"/>).</summary>
    public static WeightSnapshot Take(nn.Module model, IEnumerable<string> parameterNames)
    {
        var names = parameterNames.ToList();
        var frozen = FrozenLinear.FrozenIn(model).ToDictionary(f => f.Name + ".weight", f => f, StringComparer.Ordinal);
        var saved = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var storedModules = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string name in names)
        {
            if (!frozen.TryGetValue(name, out var f) || saved.ContainsKey(name)) continue;
            if (FrozenLinear.Of(f.Linear) is StoredWeight stored)
            {
                saved[name] = stored.Stored.alias().DetachFromDisposeScope();  // a second handle of the same bytes: no copy
                storedModules[name] = f.Name;
            }
            FrozenLinear.MakeMaster(f.Linear);
        }
        var parameters = Parameters(model);
        try
        {
            foreach (string name in names)
            {
                if (saved.ContainsKey(name)) continue;
                if (!parameters.TryGetValue(name, out var p)) throw new ArgumentException($"the model has no parameter {name}", nameof(parameterNames));
                saved[name] = p.detach().clone().DetachFromDisposeScope();
            }
        }
        catch
        {
            foreach (var t in saved.Values) t.Dispose();
            throw;
        }
        return new WeightSnapshot(saved, storedModules);
    }

    /// <summary>Copies every parameter of <paramref name="model"/> except the placeholders of frozen weights.</summary>
    public static WeightSnapshot TakeAll(nn.Module model)
    {
        var frozen = FrozenLinear.FrozenIn(model).Select(f => f.Name + ".weight").ToHashSet(StringComparer.Ordinal);
        return Take(model, model.named_parameters().Select(p => p.name).Where(n => !frozen.Contains(n)));
    }

    /// <summary>
    /// Writes the saved values back into <paramref name="model"/>'s parameters, in place (bit-exact); a weight saved in its
    /// stored dtype is frozen again with those bytes, and its fp32 master released.
    /// </summary>
    public void Restore(nn.Module model)
    {
        if (_storedModules.Count > 0)
        {
            var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
            foreach (var (name, module) in _storedModules)
            {
                if (!modules.TryGetValue(module, out var m) || m is not Linear linear) throw new ArgumentException($"the model has no linear {module}", nameof(model));
                var saved = _saved[name];
                var current = FrozenLinear.Of(linear);
                if (current is not null && _installed.TryGetValue(name, out var mine) && ReferenceEquals(current, mine)) continue;  // still the saved bytes
                var restored = new StoredWeight(saved.alias());
                if (current is not null) FrozenLinear.Replace(linear, restored);
                else
                {
                    if (!linear.weight.shape.SequenceEqual(saved.shape)) throw new ArgumentException($"{name} is [{string.Join(", ", linear.weight.shape)}], the snapshot [{string.Join(", ", saved.shape)}]", nameof(model));
                    FrozenLinear.Freeze(linear, restored);
                }
                _installed[name] = restored;
            }
        }
        var parameters = Parameters(model);
        var frozen = FrozenLinear.FrozenIn(model).ToDictionary(f => f.Name + ".weight", f => f.Linear, StringComparer.Ordinal);
        using var noGrad = no_grad();
        foreach (var (name, saved) in _saved)
        {
            if (_storedModules.ContainsKey(name)) continue;
            // Frozen since (another snapshot restored it as stored): an fp32 master again, to take the saved values.
            var p = frozen.TryGetValue(name, out var linear) ? FrozenLinear.MakeMaster(linear) : parameters.TryGetValue(name, out var q) ? q : null;
            if (p is null) throw new ArgumentException($"the model has no parameter {name}", nameof(model));
            if (!p.shape.SequenceEqual(saved.shape)) throw new ArgumentException($"{name} is [{string.Join(", ", p.shape)}], the snapshot [{string.Join(", ", saved.shape)}]", nameof(model));
            p.copy_(saved);
        }
    }

    public void Dispose()
    {
        foreach (var t in _saved.Values) t.Dispose();
        _saved.Clear();
        _storedModules.Clear();
        _installed.Clear();
    }

    private static Dictionary<string, Parameter> Parameters(nn.Module model) =>
        model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
}
