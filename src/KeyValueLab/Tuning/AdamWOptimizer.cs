using System.Globalization;
using KeyValueLab.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Tuning;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter 2019) exactly as PyTorch's <c>torch.optim.AdamW</c> (single-tensor path, no amsgrad):
/// per parameter with a gradient, step t += 1; p ← p·(1 − lr·λ); m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²;
/// p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε).
/// </summary>
/// <remarks>
/// Written out rather than using TorchSharp's <c>optim.AdamW</c>, whose step makes temporary Scalars that can be freed while
/// libtorch reads them (see <see cref="HeldScalars"/>): here every Scalar is a field or a <c>using</c> local.
/// State (<c>exp_avg</c>, <c>exp_avg_sq</c>, step per parameter) is allocated up front and saved as safetensors.
/// <see cref="Adam"/> makes its twin with <c>torch.optim.Adam</c>'s coupled weight decay (g ← g + λp), for the editors.
/// </remarks>
public sealed class AdamWOptimizer : IDisposable
{
    private readonly Parameter[] _parameters;
    private readonly Tensor[] _expAvg, _expAvgSq;
    private readonly long[] _steps;
    private readonly double _beta1, _beta2, _eps;
    private readonly Scalar _beta1Scalar, _oneMinusBeta1, _beta2Scalar, _oneMinusBeta2, _epsScalar, _weightDecayScalar;
    private readonly bool _decoupled;

    public AdamWOptimizer(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
        : this(parameters, lr, beta1, beta2, eps, weightDecay, decoupled: true)
    {
    }

    private AdamWOptimizer(IEnumerable<Parameter> parameters, double lr, double beta1, double beta2, double eps, double weightDecay, bool decoupled)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(lr);
        ArgumentOutOfRangeException.ThrowIfNegative(eps);
        ArgumentOutOfRangeException.ThrowIfNegative(weightDecay);
        if (beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "must be in [0, 1)");
        if (beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "must be in [0, 1)");
        _parameters = [.. parameters];
        (LearningRate, WeightDecay, _beta1, _beta2, _eps) = (lr, weightDecay, beta1, beta2, eps);
        using (no_grad())
        {
            _expAvg = [.. _parameters.Select(p => zeros_like(p).DetachFromDisposeScope())];
            _expAvgSq = [.. _parameters.Select(p => zeros_like(p).DetachFromDisposeScope())];
        }
        _steps = new long[_parameters.Length];
        _beta1Scalar = beta1.ToScalar();
        _oneMinusBeta1 = (1 - beta1).ToScalar();
        _beta2Scalar = beta2.ToScalar();
        _oneMinusBeta2 = (1 - beta2).ToScalar();
        _epsScalar = eps.ToScalar();
        _weightDecayScalar = weightDecay.ToScalar();
        _decoupled = decoupled;
    }

    /// <summary>
    /// Adam exactly as <c>torch.optim.Adam</c> (single-tensor path, no amsgrad): the L2 term λp is added to the gradient
    /// before the moments, instead of AdamW's decoupled decay; otherwise the same held-Scalar step.
    /// </summary>
    public static AdamWOptimizer Adam(IEnumerable<Parameter> parameters, double lr = 1e-3, double weightDecay = 0) =>
        new(parameters, lr, 0.9, 0.999, 1e-8, weightDecay, decoupled: false);

    /// <summary>Learning rate of the next <see cref="Step"/> (schedules set it before each step).</summary>
    public double LearningRate { get; set; }

    /// <summary>Decoupled weight decay λ.</summary>
    public double WeightDecay { get; }

    public IReadOnlyList<Parameter> Parameters => _parameters;

    /// <summary>Steps taken by parameter <paramref name="index"/> (parameters without a gradient at a step do not count it).</summary>
    public long StepsOf(int index) => _steps[index];

    /// <summary>First and second moment estimates of parameter <paramref name="index"/> (live tensors: do not dispose).</summary>
    public (Tensor ExpAvg, Tensor ExpAvgSq) StateOf(int index) => (_expAvg[index], _expAvgSq[index]);

    /// <summary>Clears the gradients (sets them to null, as PyTorch's default <c>set_to_none=True</c>).</summary>
    public void ZeroGrad()
    {
        foreach (var p in _parameters)
        {
            var grad = p.grad;
            if (grad is null) continue;
            p.grad = null;
            grad.Dispose();
        }
    }

    /// <summary>One update of every parameter that has a gradient.</summary>
    public void Step()
    {
        using var noGrad = no_grad();
        double lr = LearningRate;
        using Scalar decay = (1 - lr * WeightDecay).ToScalar();
        for (int i = 0; i < _parameters.Length; i++)
        {
            var param = _parameters[i];
            using var grad = param.grad;
            if (grad is null) continue;
            using var scope = NewDisposeScope();
            long t = ++_steps[i];
            if (WeightDecay != 0 && _decoupled) param.mul_(decay);
            var g = WeightDecay != 0 && !_decoupled ? grad.add(param, _weightDecayScalar) : grad;
            _expAvg[i].mul_(_beta1Scalar).add_(g, _oneMinusBeta1);
            _expAvgSq[i].mul_(_beta2Scalar).addcmul_(g, g, _oneMinusBeta2);
            double biasCorrection1 = 1 - Math.Pow(_beta1, t), biasCorrection2 = 1 - Math.Pow(_beta2, t);
            using Scalar sqrtBiasCorrection2 = Math.Sqrt(biasCorrection2).ToScalar();
            using Scalar negativeStepSize = (-lr / biasCorrection1).ToScalar();
            var denom = _expAvgSq[i].sqrt().div_(sqrtBiasCorrection2).add_(_epsScalar, HeldScalars.One);  // add_(s) alone would make a temporary alpha
            param.addcdiv_(_expAvg[i], denom, negativeStepSize);
        }
    }

    private const string FormatKey = "format", FormatValue = "kvlab-adamw", StepsKey = "steps";

    /// <summary>Writes the moments (<c>exp_avg.{i}</c>, <c>exp_avg_sq.{i}</c>, fp32) and steps (metadata) to a safetensors file.</summary>
    public void Save(string path)
    {
        var tensors = Enumerable.Range(0, _parameters.Length)
            .SelectMany(i => new TensorToSave[] { new($"exp_avg.{i}", _expAvg[i]), new($"exp_avg_sq.{i}", _expAvgSq[i]) })
            .ToList();
        var metadata = new Dictionary<string, string>
        {
            [FormatKey] = FormatValue,
            [StepsKey] = string.Join(",", _steps.Select(s => s.ToString(CultureInfo.InvariantCulture))),
        };
        SafetensorsWriter.Write(path, tensors, metadata);
    }

    /// <summary>
    /// Restores what <see cref="Save"/> wrote; the file must hold state for exactly these parameters (shapes checked). When
    /// <paramref name="path"/> does not exist but <paramref name="legacyPath"/> does, that is read as the state file of a
    /// TorchSharp <c>optim.AdamW</c> over the same parameters (checkpoints written before this optimizer existed).
    /// </summary>
    public void Load(string path, string? legacyPath = null)
    {
        if (legacyPath is not null && !File.Exists(path) && File.Exists(legacyPath))
        {
            using var torchSharp = optim.AdamW(_parameters, LearningRate, _beta1, _beta2, _eps, WeightDecay);
            torchSharp.load_state_dict(legacyPath);
            LoadFrom(torchSharp);
            return;
        }
        using var file = SafetensorsFile.Open(path);
        if (!file.Metadata.TryGetValue(FormatKey, out var format) || format != FormatValue || !file.Metadata.TryGetValue(StepsKey, out var stepsText))
            throw new InputException(path, $"not an AdamW state file (metadata \"{FormatKey}\": \"{FormatValue}\" and \"{StepsKey}\" expected)");
        var steps = stepsText.Split(',', StringSplitOptions.RemoveEmptyEntries);
        if (steps.Length != _parameters.Length)
            throw new InputException(path, $"state for {steps.Length} parameters, the optimizer has {_parameters.Length}");
        using var noGrad = no_grad();
        for (int i = 0; i < _parameters.Length; i++)
        {
            Copy(file, path, $"exp_avg.{i}", _expAvg[i]);
            Copy(file, path, $"exp_avg_sq.{i}", _expAvgSq[i]);
            _steps[i] = long.Parse(steps[i], CultureInfo.InvariantCulture);
        }
    }

    /// <summary>Takes over the state of a TorchSharp <c>optim.AdamW</c> over the same parameters (for checkpoints written with it).</summary>
    public void LoadFrom(TorchSharp.Modules.AdamW optimizer)
    {
        var states = optimizer.state_dict().State;
        if (states.Count != _parameters.Length)
            throw new ArgumentException($"state for {states.Count} parameters, this optimizer has {_parameters.Length}", nameof(optimizer));
        using var noGrad = no_grad();
        for (int i = 0; i < _parameters.Length; i++)
        {
            var state = (TorchSharp.Modules.AdamW.State)states[i];
            _expAvg[i].copy_(state.exp_avg);
            _expAvgSq[i].copy_(state.exp_avg_sq);
            _steps[i] = state.step;
        }
    }

    private static void Copy(SafetensorsFile file, string path, string name, Tensor target)
    {
        if (!file.Contains(name)) throw new InputException(path, $"no tensor {name}");
        using var stored = file.ReadFloat32(name);
        if (!stored.shape.SequenceEqual(target.shape))
            throw new InputException(path, $"{name} has shape [{string.Join(", ", stored.shape)}], the parameter has [{string.Join(", ", target.shape)}]");
        target.copy_(stored);
    }

    public void Dispose()
    {
        foreach (var t in _expAvg) t.Dispose();
        foreach (var t in _expAvgSq) t.Dispose();
        _beta1Scalar.Dispose();
        _oneMinusBeta1.Dispose();
        _beta2Scalar.Dispose();
        _oneMinusBeta2.Dispose();
        _epsScalar.Dispose();
        _weightDecayScalar.Dispose();
    }
}

/// <summary>Gradient-norm clipping as PyTorch's <c>clip_grad_norm_</c> (2-norm), with tensor operations only.</summary>
public static class GradientClipping
{
    /// <summary>
    /// Scales the gradients of <paramref name="parameters"/> by min(1, maxNorm / (‖g‖ + 1e-6)), ‖g‖ the 2-norm of all of them
    /// together (the 2-norm of the per-parameter 2-norms); returns ‖g‖ before clipping (0 when no parameter has a gradient).
    /// </summary>
    /// <remarks>Same float32 operations as libtorch's (bit-identical results): the coefficient maxNorm / (‖g‖ + 1e-6) is clamped
    /// at 1 and multiplied into every gradient as a 0-dim tensor; no per-call Scalar is created (see <see cref="HeldScalars"/>).</remarks>
    public static double ClipGradNorm(IEnumerable<Parameter> parameters, double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return 0;
        var total = stack(grads.Select(g => g.norm(2f)), 0).norm(2f);
        var dtype = total.dtype;
        var coefficient = tensor(maxNorm, dtype).div(total.Plus(tensor(1e-6, dtype)));
        var clamped = minimum(coefficient, tensor(1.0, dtype));
        foreach (var g in grads) g.mul_(clamped);
        return total.item<float>();
    }
}
