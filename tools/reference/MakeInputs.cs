#:project ../../src/KeyValueLab/KeyValueLab.csproj
// Makes the inputs of tools/reference/make_references.py with KeyValueLab itself: two tiny random Llamas
// saved as Hugging Face folders, a LoRA adapter trained a few steps on the first and saved in PEFT's format,
// and our logits for a fixed batch of token ids.
//
//   dotnet run tools/reference/MakeInputs.cs -- tests/KeyValueLab.Tests/Fixtures/reference/ours
//
// Everything is seeded: running it again writes the same files.
using System.Text.Json.Nodes;
using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Native;
using KeyValueLab.Tuning;
using TorchSharp;
using static TorchSharp.torch;

TorchRuntime.EnsureLoaded();
string outDir = args.Length > 0 ? args[0] : "tests/KeyValueLab.Tests/Fixtures/reference/ours";
Directory.CreateDirectory(outDir);

// Untied, grouped-query attention (4 query heads, 2 KV heads). initializer_range 0.2 (not HF's 0.02) so that
// attention is far from uniform and the logits are O(1): a 1e-4 agreement then means something.
const string MainConfig = """
    {"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":256,"hidden_size":64,"intermediate_size":128,
     "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":128,"rms_norm_eps":1e-5,
     "rope_theta":10000.0,"hidden_act":"silu","attention_bias":false,"mlp_bias":false,"bos_token_id":1,"eos_token_id":2,
     "tie_word_embeddings":false,"initializer_range":0.2,"torch_dtype":"float32"}
    """;
// Tied embeddings, multi-query attention (2 query heads, 1 KV head), one layer.
const string TiedConfig = """
    {"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":256,"hidden_size":32,"intermediate_size":64,
     "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"max_position_embeddings":128,"rms_norm_eps":1e-6,
     "rope_theta":10000.0,"hidden_act":"silu","attention_bias":false,"mlp_bias":false,"bos_token_id":1,"eos_token_id":2,
     "tie_word_embeddings":true,"initializer_range":0.2,"torch_dtype":"float32"}
    """;

long[][] idRows =
[
    [1, 17, 45, 200, 3, 99, 128, 7, 255, 64, 12, 33],
    [1, 250, 8, 8, 8, 140, 77, 2, 19, 180, 5, 61],
];
using var ids = tensor(idRows.SelectMany(r => r).ToArray(), [idRows.Length, idRows[0].Length]);
File.WriteAllText(Path.Combine(outDir, "ids.json"),
    new JsonObject { ["input_ids"] = new JsonArray([.. idRows.Select(r => (JsonNode?)new JsonArray([.. r.Select(v => (JsonNode?)JsonValue.Create(v))]))]) }.ToJsonString());

var logits = new Dictionary<string, Tensor>();

using (var tied = ModelLoader.Create(TiedConfig, seed: 7))
{
    tied.Save(Path.Combine(outDir, "tiny_llama_tied"), overwrite: true);
    using var noGrad = no_grad();
    logits["tied_base"] = tied.Model.Forward(ids);
}

using var loaded = ModelLoader.Create(MainConfig, seed: 42);
var model = loaded.Model;
loaded.Save(Path.Combine(outDir, "tiny_llama"), overwrite: true);
using (no_grad()) logits["base"] = model.Forward(ids);

// LoRA on attention q, v and the FFN gate (keys) and down (values) projections, trained 5 AdamW steps on random
// token sequences (next-token loss), dropout active while training.
var config = new LoraConfig
{
    R = 4, Alpha = 8, Dropout = 0.05, BaseModel = "tiny_llama",
    TargetModules = LoraConfig.ResolveTargets("q,v,keys:gate,values", "llama"),
};
using var lora = LoraModel.Attach(model, config, seed: 3);
lora.Training = true;
lora.DropoutGenerator = new Generator(11);
var optimizer = optim.AdamW(lora.Parameters(), lr: 2e-2);
var data = new Generator(5);
for (int step = 0; step < 5; step++)
{
    using var scope = NewDisposeScope();
    var batch = randint(3, 256, [4, 16], dtype: ScalarType.Int64, generator: data);
    var output = model.Forward(batch);
    long t = batch.shape[1];
    var loss = nn.functional.cross_entropy(output.narrow(1, 0, t - 1).reshape(-1, output.shape[^1]), batch.narrow(1, 1, t - 1).reshape(-1));
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    Console.WriteLine($"step {step + 1}: loss {loss.item<float>():F4}");
}
lora.Training = false;
lora.Save(Path.Combine(outDir, "adapter_ours"));
using (no_grad()) logits["adapter"] = model.Forward(ids);
Console.WriteLine(lora.TrainableSummary());

SafetensorsWriter.Write(Path.Combine(outDir, "ours_logits.safetensors"),
    [.. logits.Select(kv => new TensorToSave(kv.Key, kv.Value))], new Dictionary<string, string> { ["format"] = "pt" });
foreach (var (name, t) in logits) Console.WriteLine($"{name}: shape [{string.Join(", ", t.shape)}], max |logit| {t.abs().max().item<float>():F4}");
