"""The Qianfan documentation pages' own examples of V1 and V2 runs, as the API returns them
(shared by the parsing and rendering tests)."""

# The V1 page's SDK example (a stopped run) and its HTTP example (a finished run, with
# the doc's own lower-case ``finishtime``).
V1_SDK_EXAMPLE = {
    "id": 6205, "description": "", "taskId": 10250, "taskName": "sdk_test_7", "version": 5,
    "trainType": "ernieBotLite-v201-8k", "trainMode": "SFT", "peftType": "ALL",
    "trainStatus": "STOP", "progress": 0, "runTime": 267452, "trainTime": 0,
    "startTime": "2023-10-20 18:19:09", "finishTime": "0000-00-00 00:00:00",
    "vdlLink": "https://console.bce.baidu.com/qianfan/visualdl/index?xxxx",
}
V1_HTTP_EXAMPLE = {
    "id": 1, "description": "desc", "taskId": 1, "taskName": "test", "version": 1,
    "jobRunType": 1, "increConfig": {"taskId": 362, "jobId": 1264},
    "trainType": "ernieBotLite-v200", "trainMode": "SFT", "peftType": "ALL",
    "trainStatus": "FINISH", "startTime": "2023-05-05 00:00:00",
    "finishtime": "2023-05-05 01:00:00", "runTime": 3600, "trainTime": 1800, "progress": 99,
    "vdlLink": "https://console.bce.baidu.com/qianfan/visualdl/index?displayToken=eyJ=",
}
# The V2 page's example task.
V2_EXAMPLE = {
    "taskId": "task-0tgmn4a7h4i6", "jobId": "job-ftp4icwebtnc", "jobName": "job-name",
    "jobDescription": "job-description", "model": "ERNIE-Speed-8K", "trainMode": "SFT",
    "parameterScale": "FullFineTuning", "runStatus": "Done",
    "metrics": {"BLEU-4": "17.03%", "ROUGE-1": "30.83%", "ROUGE-2": "12.37%",
                "ROUGE-L": "29.14%"},
    "createTime": "2024-01-16T09:48:35Z", "finishTime": "2024-01-16T10:48:35Z",
}
